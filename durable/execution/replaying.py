"""Replaying a run's history against workflow code, executing nothing: a divergence check.

A :class:`ReplayExecutor` is a :class:`~durable.execution.runner.RunExecutor` that
never writes: every step, wait and patch is checked against the log exactly as a
resumed run checks it (same positions, keys, kinds of call), a recorded outcome is
returned from the log, and the first call the log has no outcome for is the
*frontier*: the replay stops there, as the run would before executing anything.
No step function, poll check or clock wait is ever called.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel

from durable.authoring.context import StepCall
from durable.authoring.signals import Suspend
from durable.authoring.waits import WaitSpec
from durable.authoring.workflow import Workflow
from durable.errors import NonDeterminismError
from durable.execution.outcomes import Outcome, decode_result, failure_of
from durable.execution.runner import RunExecutor
from durable.execution.writer import RunHost
from durable.log.records import FAILED
from statewf.clock import SystemClock
from statewf.records import Instance, StepRow, TransitionRecord
from statewf.running import DEFAULT_MAX_PAYLOAD_BYTES
from statewf.store import SqlStore


@dataclass(frozen=True)
class Divergence:
    """Where the code and a run's log part: the position, the recorded call, the new call.

    ``recorded`` and ``requested`` read like ``"step 'send-sms' (run)"`` (a
    deprecated patch: ``"patch ID (old branch)"``); ``recorded`` is None where the
    log holds no call at the position, ``requested`` where the code asked for none
    there (it returned, or raised).
    """

    run_id: str
    workflow: str
    position: int | None
    recorded: str | None
    requested: str | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ReplayResult:
    """How replaying one run's history against the code ended.

    ``reached`` is ``"frontier"`` (the code asked for the first call the log has no
    outcome for: a resumed run would go on from there), ``"completed"`` or
    ``"failed"`` (the workflow function returned or raised). ``steps`` counts the
    calls replayed; ``patches`` holds each ``ctx.patched`` answer the replay gave.
    """

    run_id: str
    workflow: str
    version: str
    reached: str
    steps: int
    divergence: Divergence | None = None
    patches: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the code replays the history without diverging."""
        return self.divergence is None

    def raise_if_diverged(self) -> None:
        """Raise :class:`~durable.NonDeterminismError` with the divergence's message, if any."""
        if self.divergence is not None:
            d = self.divergence
            raise NonDeterminismError(
                d.message,
                instance_id=d.run_id,
                position=d.position,
                recorded=d.recorded,
                requested=d.requested,
            )


class _Frontier(Suspend):
    """The code reached a call the log holds no outcome for: the replay ends here."""


class ReplayExecutor(RunExecutor):
    """A run's executor that answers every call from the log and writes nothing."""

    def __init__(
        self,
        workflow: Workflow[Any, Any],
        snapshot: Instance,
        records: Sequence[TransitionRecord | StepRow],
    ) -> None:
        # no store: nothing here reads or writes a database (write() refuses)
        host = RunHost(
            store=cast(SqlStore, None),
            clock=SystemClock(),
            max_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
            rand=random.Random(0).random,
        )
        super().__init__(host, workflow, snapshot, records)
        self.deadline = None  # a replay checks the code, not the run's time limit
        self.frontier: int | None = None
        #: position -> (key, kind of call) the code asked for
        self.asked: dict[int, tuple[str, str]] = {}

    def claim_position(self, key: str, call: str) -> int:
        """Note what the code asks for at the next position, then check it against the log."""
        self.asked[self.next_position] = (key, call)
        return super().claim_position(key, call)

    def replaying(self) -> bool:
        """Always: nothing is executed (``ctx.logger`` stays quiet)."""
        return True

    def call_step(
        self,
        key: str,
        fn: Any,
        args: tuple[Any, ...],
        *,
        result_type: type[BaseModel] | None,
        **_options: Any,
    ) -> StepCall[Any]:
        """Check the step against the log; awaiting it returns the recorded outcome."""
        position = self.claim_position(key, "run")

        async def replayed() -> Any:
            recorded = self._recorded(position, key)
            return decode_result(recorded.result, recorded.model, result_type, fn)

        return StepCall(replayed)

    def call_wait(self, key: str, spec: WaitSpec) -> StepCall[Any]:
        """Check the wait against the log; awaiting it returns the recorded outcome."""
        position = self.claim_position(key, spec.kind)

        async def replayed() -> Any:
            recorded = self._recorded(position, key)
            return spec.result(recorded.result, timed_out=recorded.timed_out)

        return StepCall(replayed)

    def _recorded(self, position: int, key: str) -> Any:
        recorded = self.history.steps.get(position)
        if recorded is None:
            if self.frontier is None or position < self.frontier:
                self.frontier = position
            raise _Frontier(f"no outcome recorded at position {position} ({key!r})")
        if not recorded.ok:
            raise failure_of(recorded, key, self.run_id)
        return recorded

    async def write(self, make: Any, **_options: Any) -> None:
        """Refused: a replay never writes (reaching here is a bug in the replay)."""
        raise AssertionError(f"replaying run {self.run_id!r} tried to write to its log")


async def replay_run(
    workflow: Workflow[Any, Any], records: Sequence[TransitionRecord | StepRow], snapshot: Instance
) -> ReplayResult:
    """Replay one run's log against ``workflow``; how it ended and where it diverged."""
    ex = ReplayExecutor(workflow, snapshot, records)
    outcome = await ex.run_function()
    reached = {"completed": "completed", "failed": "failed"}.get(outcome.kind, "frontier")
    return ReplayResult(
        run_id=snapshot.id,
        workflow=workflow.name,
        version=workflow.version,
        reached=reached,
        steps=ex.next_position,
        divergence=_divergence(ex, outcome, snapshot),
        patches=dict(ex.patch_answers),
    )


def _divergence(ex: ReplayExecutor, outcome: Outcome, snapshot: Instance) -> Divergence | None:
    error = outcome.error
    if outcome.kind != "failed" or error is None:
        return None
    run, name = snapshot.id, ex.workflow.name
    if error.type == "NonDeterminismError":
        position = error.details.get("position")
        at = int(position) if isinstance(position, int) else None
        noted = error.details.get("recorded")
        recorded = ex.history.calls.get(at) if at is not None else None
        requested = ex.asked.get(at) if at is not None and error.details.get("requested") else None
        said: str | None
        requested_text: str | None
        if isinstance(noted, str) and noted.startswith("patch "):
            said, requested_text = noted, str(error.details.get("requested"))
        else:
            said = f"step {recorded[0]!r} ({recorded[1]})" if recorded else None
            requested_text = f"step {requested[0]!r} ({requested[1]})" if requested else None
        return Divergence(
            run_id=run,
            workflow=name,
            position=at,
            recorded=said,
            requested=requested_text,
            message=error.message,
        )
    if snapshot.status == FAILED:
        return None  # the run had failed: the code fails it again, as recorded
    return Divergence(
        run_id=run,
        workflow=name,
        position=ex.next_position,
        recorded=None,
        requested=None,
        message=(
            f"replaying run {run!r} of workflow {name!r} ({snapshot.status}) against the "
            f"code raised {error.type}: {error.message}; the run would fail when it "
            "resumes. Make the new code handle what this run recorded."
        ),
    )
