"""Control-flow signals the engine raises inside workflow code.

They derive from ``BaseException`` (like ``asyncio.CancelledError``), so a user's
``except Exception:`` cannot swallow them. Even a bare ``except:`` cannot change the
outcome: the run's context remembers the signal, every later step call raises it
again, and the engine checks it when the workflow function returns.
"""

from __future__ import annotations

from statewf.errors import StatewfError


class WorkflowSignal(BaseException):
    """Base of the engine's signals; never raise or catch these in workflow code."""


class Suspend(WorkflowSignal):
    """The run stops executing here and waits (for a time or an event) without a task.

    The log row that recorded the wait is already committed; the engine resumes the
    run by replaying it when the wait is over.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Abort(WorkflowSignal):
    """The run must fail with ``error`` whatever the workflow code does next.

    Used for errors in how the code uses the engine: non-determinism, a duplicate
    step key, a workflow timeout, a result that cannot be stored.
    """

    def __init__(self, error: StatewfError, *, step: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.step = step


class Stop(WorkflowSignal):
    """The run was finished elsewhere (cancelled, or completed by another writer).

    Raised when the engine finds, at a write, that the run is no longer its to
    continue; nothing more is written for this execution.
    """


class ExecutionCrashed(BaseException):
    """Workflow code raised ``SystemExit`` or ``KeyboardInterrupt``: this execution crashed.

    Not a :class:`WorkflowSignal` and not a step failure: the run stays in progress
    under its lease, which is left to run out, so the next claim (by any worker)
    counts the crash and ``crash_limit`` of them dead-letter the run. The worker
    itself goes on with its other runs instead of going down with this one.
    """
