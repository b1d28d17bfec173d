"""The lifecycle of one execution of a run: one phase, the legal moves, and its modes.

An execution is built :attr:`~Phase.READY` from the run's log (or already
:attr:`~Phase.FINISHED`, for a finished run), is :attr:`~Phase.EXECUTING` while the
workflow function runs, and ends in exactly one of the other phases. :data:`MOVES`
lists every legal move; any other is a bug and raises :class:`RuntimeError`.

While it executes, it may take on *modes*, restrictions that only accumulate:
:attr:`~Mode.SUSPENDING` (a suspension row was written, so later rows keep the run's
waiting status), :attr:`~Mode.DRAINING` (the worker is stopping: no new step attempt
starts) and :attr:`~Mode.PAUSING` (a reload found the run paused from outside: only
step outcomes still go in). Modes are independent of each other, not phases: a
stopping worker may drain an execution that is also suspending.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    """Where one execution of a run is."""

    #: built from the log; the workflow function has not started
    READY = "ready"
    #: the workflow function runs; writes that keep failing end it in WRITE_FAILED
    EXECUTING = "executing"
    #: its final row is written, or a reload found the run finished
    FINISHED = "finished"
    #: the run was cancelled (found on a reload, or this execution was told)
    CANCELLED = "cancelled"
    #: superseded: another execution recorded a step position first, or the lease was lost
    STOPPED = "stopped"
    #: writes kept failing on database errors; the run stays in progress for recovery
    WRITE_FAILED = "write_failed"


class Mode(Enum):
    """A restriction an executing run takes on (never taken back)."""

    SUSPENDING = "suspending"
    DRAINING = "draining"
    PAUSING = "pausing"


_ENDS = frozenset({Phase.FINISHED, Phase.CANCELLED, Phase.STOPPED, Phase.WRITE_FAILED})

#: Every legal move. A cancel may come after any other end (the task is still being
#: stopped); nothing leaves CANCELLED.
MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.READY: frozenset({Phase.EXECUTING, Phase.FINISHED, Phase.CANCELLED, Phase.STOPPED}),
    Phase.EXECUTING: _ENDS,
    Phase.FINISHED: frozenset({Phase.CANCELLED}),
    Phase.STOPPED: frozenset({Phase.CANCELLED}),
    Phase.WRITE_FAILED: frozenset({Phase.CANCELLED}),
    Phase.CANCELLED: frozenset(),
}


class Lifecycle:
    """One execution's phase and modes; moves are checked against :data:`MOVES`."""

    def __init__(self, *, finished: bool) -> None:
        self.phase = Phase.FINISHED if finished else Phase.READY
        self.modes: set[Mode] = set()
        #: whether the execution is over (nothing more is written); read before every
        #: write, so a plain bool (an Enum's hash, a property: each a Python call)
        self.ended = finished

    def move(self, to: Phase) -> None:
        """Go to phase ``to`` (staying is allowed); :class:`RuntimeError` if that is illegal."""
        if to is self.phase:
            return
        if to not in MOVES[self.phase]:
            raise RuntimeError(f"an execution cannot go from {self.phase.value} to {to.value}")
        self.phase = to
        self.ended = to in _ENDS

    def begin(self) -> None:
        """The workflow function starts (an execution that already ended stays ended)."""
        if self.phase is Phase.READY:
            self.move(Phase.EXECUTING)

    def end(self, to: Phase) -> None:
        """End in ``to`` unless already ended (a second end is not a new fact)."""
        if not self.ended:
            self.move(to)

    def take(self, mode: Mode) -> None:
        """Take on ``mode`` (no effect once ended)."""
        if not self.ended:
            self.modes.add(mode)

    def has(self, mode: Mode) -> bool:
        """Whether ``mode`` was taken on."""
        return bool(self.modes) and mode in self.modes
