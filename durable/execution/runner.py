"""Executing one run: replay the recorded steps, run the new ones, record every outcome.

A :class:`RunExecutor` is built from a run's snapshot and whole log (one query),
then runs the workflow function. Each ``ctx.step.run`` call gets the next
*position*; a position the log already holds is answered from memory (after
checking that the key matches), a new one runs the step and appends one log row in
one transaction, together with the new snapshot built by :func:`statewf.fold.apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from durable.authoring.context import Context, StepCall, Steps
from durable.authoring.current import StepInfo
from durable.authoring.retry import RetryPolicy, make_policy
from durable.authoring.signals import Abort, ExecutionCrashed, Stop, Suspend, WorkflowSignal
from durable.authoring.waits import WaitSpec
from durable.authoring.workflow import Workflow
from durable.errors import (
    DuplicateStepKey,
    NonDeterminismError,
    ResultNotSerializable,
    StepFailed,
    WorkflowTimeout,
    deprecated_patch_on_old_run,
    diverged,
)
from durable.execution.outcomes import (
    Outcome,
    call_once,
    decode_result,
    error_of,
    failure_of,
    timing,
)
from durable.execution.snapshots import (
    drop_snapshot,
    had_snapshot,
    leave_snapshot,
    load_history,
    read_whole,
    snapshot_due,
)
from durable.execution.timing import sleep_until, within_deadline
from durable.execution.transactional import run_transactional
from durable.execution.waiting import run_wait
from durable.execution.writer import LogWriteFailed, RunHost, RunWriter
from durable.log.codec import encode
from durable.log.records import (
    COMPLETED,
    FAILED,
    KIND_COMPLETED,
    KIND_FAILED,
    KIND_PATCH,
    KIND_RETRY,
    KIND_STEP,
    KIND_STEP_FAILED,
    StepTimeline,
)
from durable.log.rows import step_row
from durable.log.views import timeline_of
from durable.observe import record_outcome, run_span, step_span
from statewf.durations import DurationLike, to_seconds
from statewf.errors import InvalidInput, StatewfError
from statewf.records import Instance, ReplayRow, ReplaySnapshot, StepRow, TransitionRecord
from statewf.store import Tx

log = logging.getLogger("durable")
T = TypeVar("T")


class RunExecutor(RunWriter):
    """Runs one workflow run once, from its log, to completion, failure or suspension."""

    def __init__(
        self,
        host: RunHost,
        workflow: Workflow[Any, Any],
        snapshot: Instance,
        records: Sequence[ReplayRow],
    ) -> None:
        super().__init__(host, snapshot)
        self.workflow = workflow
        self.history, self._loaded = load_history(host, snapshot, records)
        self._origin = snapshot  # the run as loaded (the replay snapshot's reference)
        self._had_snapshot = had_snapshot(self._loaded)
        self._timeline: tuple[tuple[int, int], tuple[StepTimeline, ...]] = ((-1, -1), ())
        self._last_recorded = max(self.history.steps, default=-1)
        self.next_position = 0
        self.used_keys: dict[str, int] = {}
        self.patch_answers: dict[str, bool] = {}
        self.fatal: Abort | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        # the loop executing the run, read once: asyncio.current_task() without one asks
        # for the running loop, a getpid() system call each time
        self._loop: asyncio.AbstractEventLoop | None = None
        deadline = snapshot.context.get("deadline")
        self.deadline = datetime.fromisoformat(deadline) if deadline else None
        try:
            value = workflow.load_input(snapshot.context.get("input"))
        except ValidationError as exc:  # the input type changed under a stored run
            value = None
            self.fatal = Abort(
                InvalidInput(
                    f"the stored input of run {snapshot.id!r} no longer validates against "
                    f"{workflow.input_type!r} of workflow {workflow.name!r} version "
                    f"{workflow.version!r}: {exc.errors()[0]['msg']}; keep input types "
                    "compatible, or register the changed workflow under a new version",
                    instance_id=snapshot.id,
                )
            )
        self.ctx: Context[Any] = Context(
            input=value,
            run_id=snapshot.id,
            workflow=workflow.name,
            resource_id=snapshot.resource_id,
            steps=Steps(self),
        )

    # ------------------------------------------------------------ the run

    async def execute(self, *, own_task: bool = False) -> Outcome:
        """Run the workflow function and record how it ended; the outcome.

        ``own_task``: the caller's task exists for this execution alone (the engine's
        task of the run), so without a deadline to watch the function runs in it;
        otherwise (``resume()`` in the caller's task) it runs in a task of its own, the
        caller's context variables out of its reach.
        """
        worker = self.lease.owner if self.lease is not None else None
        with run_span(self.run_id, self.workflow.name, self.workflow.version, worker=worker):
            outcome = await self._execute(own_task)
            if outcome.kind != "completed" and snapshot_due(self._loaded, len(self.written)):
                # a long log: the next resume reads a snapshot and the rows after it
                await leave_snapshot(self.host, self._origin, self._loaded, len(self.written))
            elif outcome.kind == "completed" and self._had_snapshot and self.written:
                await drop_snapshot(self.host, self.run_id)  # this execution ended the run
            error = outcome.error
            record_outcome(outcome.kind, f"{error.type}: {error.message}" if error else None)
            return outcome

    async def _execute(self, own_task: bool) -> Outcome:
        self.life.begin()
        self._loop = asyncio.get_running_loop()
        try:
            if own_task and self.deadline is None:
                # nothing to watch: the function runs in this task (no task of its own, no
                # asyncio.wait, two loop turns fewer per run)
                outcome = await self._call_function()
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # the workflow code swallowed this task's cancellation: it still
                    # ends the execution, as it did when the function ran in a task
                    raise asyncio.CancelledError()
            else:
                outcome = await within_deadline(
                    self._call_function(), self.host.clock, self.deadline, self._timed_out
                )
        finally:
            await self._settle()
        await self._finish(outcome)
        return outcome

    def _timed_out(self) -> Outcome:
        """The run's deadline came first: the function is stopped as a fatal abort."""
        timeout = WorkflowTimeout(
            f"run {self.run_id!r} of workflow {self.workflow.name!r} exceeded its "
            f"timeout of {self.workflow.timeout}s (deadline {self.deadline})",
            instance_id=self.run_id,
        )
        self.fatal = Abort(timeout)
        return Outcome("failed", error=error_of(timeout))

    async def _call_function(self) -> Outcome:
        outcome = await self.run_function()
        if self.write_failed is not None:
            # the engine could not write the log: not the run's failure; it stays in
            # progress (whatever the code did with the signal) for recovery to resume
            return Outcome("stopped")
        return outcome

    async def run_function(self) -> Outcome:
        """Call the workflow function once; how it ended (nothing recorded here)."""
        if self.fatal is not None:  # nothing to run: the run cannot go on with this code
            return self._aborted(self.fatal)
        try:
            value = await self.workflow.fn(self.ctx)
        except (KeyboardInterrupt, SystemExit) as exc:
            raise ExecutionCrashed(f"run {self.run_id!r} raised {exc!r}") from exc
        except WorkflowSignal as signal:
            if self.fatal is not None or isinstance(signal, Abort):
                return self._aborted(signal)
            if isinstance(signal, Suspend):
                return Outcome("suspended")
            return Outcome("stopped")
        except StepFailed as exc:
            if self.fatal is not None:
                return self._aborted(self.fatal)
            return Outcome("failed", error=error_of(exc, step=exc.step))
        except Exception as exc:
            if self.fatal is not None:
                return self._aborted(self.fatal)
            return Outcome("failed", error=error_of(exc, trace=True))
        if self.fatal is not None:
            return self._aborted(self.fatal)
        leftover = sorted(p for p in self.history.calls if p >= self.next_position)
        if leftover:
            recorded = self.history.calls[leftover[0]][0]
            error = NonDeterminismError(
                f"run {self.run_id!r} returned after {self.next_position} step(s), but its "
                f"log records step {recorded!r} at position {leftover[0]}; the workflow code "
                "changed since the run started. Keep the old code path for runs in progress.",
                instance_id=self.run_id,
                position=leftover[0],
                recorded=recorded,
                requested=None,
            )
            return Outcome("failed", error=error_of(error))
        try:
            output, model = encode(
                value,
                what=f"output of workflow {self.workflow.name!r}",
                max_bytes=self.host.max_bytes,
            )
        except ResultNotSerializable as exc:
            return Outcome("failed", error=error_of(exc))
        return Outcome("completed", output=output, output_model=model)

    def _aborted(self, signal: BaseException) -> Outcome:
        abort = self.fatal if self.fatal is not None else signal
        assert isinstance(abort, Abort)
        return Outcome("failed", error=error_of(abort.error, step=abort.step))

    async def _settle(self) -> None:
        """Cancel step tasks still running after the function ended (e.g. after gather failed)."""
        current = asyncio.current_task()
        pending = [t for t in self._inflight if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _finish(self, outcome: Outcome) -> None:
        if outcome.kind == "completed":
            context_set: dict[str, Any] = {"output": outcome.output}
            if outcome.output_model is not None:
                context_set["output_model"] = outcome.output_model
            status, kind = COMPLETED, KIND_COMPLETED
        elif outcome.kind == "failed":
            assert outcome.error is not None
            context_set = {"error": outcome.error.model_dump(mode="json")}
            status, kind = FAILED, KIND_FAILED
        else:
            return

        def make(_tx: Tx | None, _snap: Instance) -> dict[str, Any]:
            return {
                "kind": kind,
                "status": status,
                "target": (status,),
                "context_set": context_set,
                "payload": outcome.output if outcome.kind == "completed" else None,
            }

        with contextlib.suppress(Stop, LogWriteFailed):  # LogWriteFailed is logged
            await self.write(make, final=True)

    # ------------------------------------------------------------ steps

    def call_step(
        self,
        key: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        retries: int | None,
        retry_delay: DurationLike | None,
        retry: RetryPolicy | None,
        timeout: DurationLike | None,
        result_type: type[BaseModel] | None,
        transactional: bool,
    ) -> StepCall[Any]:
        """Fix the step's position now; the returned awaitable runs or replays it."""
        if not callable(fn):
            self._abort(InvalidInput(f"step {key!r}: {fn!r} is not callable"), key)
        position = self.claim_position(key, "run")
        seconds = to_seconds(timeout, what=f"timeout of step {key!r}") if timeout else None
        policy = make_policy(retry, retries, retry_delay, self.workflow.retry)
        return StepCall(
            partial(
                self._step, position, key, fn, args, policy, seconds, result_type, transactional
            )
        )

    def call_wait(self, key: str, spec: WaitSpec) -> StepCall[Any]:
        """Fix a wait's position now; the returned awaitable finishes it or suspends."""
        position = self.claim_position(key, spec.kind)
        return StepCall(lambda: self._wait(position, key, spec))

    async def _wait(self, position: int, key: str, spec: WaitSpec) -> Any:
        if self.fatal is not None:
            raise Abort(self.fatal.error, step=self.fatal.step)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await run_wait(self, position, key, spec)
        finally:
            if task is not None:
                self._inflight.discard(task)

    def replaying(self) -> bool:
        """Whether the code has not yet reached the last step the loaded log recorded."""
        return self.next_position <= self._last_recorded

    def patched(self, patch_id: str, *, deprecated: bool) -> bool:
        """``ctx.patched(patch_id)``: the log's answer, or one decided now and recorded
        ahead of the next row (``deprecated``: always True, recorded nowhere)."""
        if self.fatal is not None:
            raise Abort(self.fatal.error, step=self.fatal.step)
        if not isinstance(patch_id, str) or not patch_id or len(patch_id) > 255:
            self._abort(InvalidInput(f"patch id must be 1-255 characters, got {patch_id!r}"), None)
        if patch_id not in self.patch_answers:
            at = self.next_position
            answer, recorded = self.history.patch(patch_id, at)
            if deprecated and not answer:
                error = deprecated_patch_on_old_run(self.run_id, self.workflow.name, patch_id, at)
                self._abort(error, None)
            if not recorded and not deprecated:
                meta = {"patched": answer, "at": at}
                self.markers.append({"kind": KIND_PATCH, "key": patch_id, "meta": meta})
            self.patch_answers[patch_id] = answer
        return self.patch_answers[patch_id]

    def timeline(self) -> tuple[StepTimeline, ...]:
        """The finished steps the code has reached, from the loaded log and this
        execution's rows (cached): the same on a replay as the first time."""
        mark = (len(self.written), self.next_position)
        if self._timeline[0] != mark:
            if self._loaded and isinstance(self._loaded[0], ReplaySnapshot):
                self._loaded = read_whole(self.host, self._origin)  # rows the snapshot holds
            steps = timeline_of([*cast(Sequence[StepRow], self._loaded), *self.written])
            reached = [s for s in steps if s.position < mark[1] and s.status != "retrying"]
            self._timeline = (mark, tuple(reached))
        return self._timeline[1]

    def absorb(self, records: list[TransitionRecord]) -> None:
        """Learn of rows another writer appended: events and releases of waits."""
        for record in records:
            self.history.add(record)

    def recorded(self, position: int) -> bool:
        """Whether the log (as last read) holds the outcome of the step at ``position``.

        The executor's own rows never enter :attr:`history` after it was loaded, so
        a position found here while this execution is running the step was
        recorded by another execution of the run.
        """
        return position in self.history.steps

    def claim_position(self, key: str, call: str) -> int:
        """The next position, after checking ``key`` against the log's record of it.

        ``call`` is what kind of step is asked for (``run``, ``sleep``, ``wait``...);
        a different key, or a different kind of call, at a recorded position is
        non-determinism.
        """
        if self.fatal is not None:
            raise Abort(self.fatal.error, step=self.fatal.step)
        if not isinstance(key, str) or not key or len(key) > 255:
            self._abort(
                InvalidInput(f"step key must be a string of 1-255 characters, got {key!r}"),
                None,
            )
        position = self.next_position
        self.next_position += 1
        if key in self.used_keys:
            self._abort(
                DuplicateStepKey(
                    f"step key {key!r} is used twice in run {self.run_id!r} (positions "
                    f"{self.used_keys[key]} and {position}); step keys must be unique in a "
                    "run: derive them from loop data, e.g. f'process-{item}'",
                    instance_id=self.run_id,
                ),
                key,
            )
        self.used_keys[key] = position
        recorded = self.history.calls.get(position)
        if recorded is None:
            elsewhere = self.history.positions.get(key)
            if elsewhere is not None and elsewhere != position:
                self._nondeterminism(position, None, key, elsewhere)
        elif recorded[0] != key:
            self._nondeterminism(position, recorded[0], key, self.history.positions.get(key))
        elif recorded[1] != call:
            self._nondeterminism(position, f"{key} ({recorded[1]})", f"{key} ({call})", None)
        self._check_deadline(key)
        return position

    def _abort(self, error: StatewfError, step: str | None) -> None:
        self.fatal = Abort(error, step=step)
        raise Abort(error, step=step)

    def _nondeterminism(
        self, position: int, recorded: str | None, requested: str, elsewhere: int | None
    ) -> None:
        error = diverged(self.run_id, self.workflow.name, position, recorded, requested, elsewhere)
        self._abort(error, requested)

    def _check_deadline(self, key: str | None) -> None:
        if self.deadline is not None and self.host.clock.now() >= self.deadline:
            self._abort(
                WorkflowTimeout(
                    f"run {self.run_id!r} of workflow {self.workflow.name!r} exceeded its "
                    f"timeout of {self.workflow.timeout}s",
                    instance_id=self.run_id,
                ),
                key,
            )

    async def _step(
        self,
        position: int,
        key: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        policy: RetryPolicy,
        timeout: float | None,
        model: type[BaseModel] | None,
        transactional: bool,
    ) -> Any:
        if self.fatal is not None:
            raise Abort(self.fatal.error, step=self.fatal.step)
        recorded = self.history.steps.get(position)
        if recorded is not None:
            if recorded.ok:
                return decode_result(recorded.result, recorded.model, model, fn)
            raise failure_of(recorded, key, self.run_id)
        task = asyncio.current_task(self._loop)
        if task is not None:
            self._inflight.add(task)
        try:
            return await self._attempts(
                position, key, fn, args, policy, timeout, model, transactional
            )
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _attempts(
        self,
        position: int,
        key: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        policy: RetryPolicy,
        timeout: float | None,
        model: type[BaseModel] | None,
        transactional: bool,
    ) -> Any:
        prior = self.history.retries.get(position)
        attempt = prior.attempts if prior is not None else 0
        retry_at = prior.retry_at if prior is not None else None
        clock = self.host.clock
        while True:
            if retry_at is not None:
                await sleep_until(clock, retry_at)
                self._check_deadline(key)
            if self.life.modes and self.holding_back:
                raise Stop()  # paused from outside, or the worker stops: no new attempt
            attempt += 1
            info = StepInfo(self.run_id, self.workflow.name, key, position, attempt)
            started = clock.now()
            meta: dict[str, Any] = {"position": position, "attempt": attempt}
            if transactional:
                meta["transactional"] = True
            with step_span(self.run_id, key, position, attempt):
                try:
                    if transactional:
                        return await run_transactional(
                            self, info, fn, args, timeout, model, meta, started
                        )
                    value = await call_once(clock, info, fn, args, timeout)
                    result, result_model = encode(
                        value, what=f"result of step {key!r}", max_bytes=self.host.max_bytes
                    )
                except (KeyboardInterrupt, SystemExit) as exc:
                    # never out of a task as such: asyncio would take the worker down
                    raise ExecutionCrashed(f"step {key!r} raised {exc!r}") from exc
                except Exception as exc:
                    ended = clock.now()
                    error = error_of(exc, step=key)
                    meta.update(timing(started, ended))
                    if (
                        policy.retryable(exc)
                        and attempt < policy.max_attempts
                        and not isinstance(exc, ResultNotSerializable)
                    ):
                        retry_at = ended + timedelta(
                            seconds=policy.delay_before(attempt, self.host.rand)
                        )
                        meta["retry_at"] = retry_at.isoformat()
                        log.info(
                            "run %s step %s attempt %s failed (%s: %s); retry at %s",
                            self.run_id,
                            key,
                            attempt,
                            error.type,
                            error.message,
                            retry_at,
                        )
                        await self._record(
                            KIND_RETRY,
                            key,
                            {"error": error.model_dump(mode="json")},
                            meta,
                            position,
                        )
                        record_outcome("retrying", f"{error.type}: {error.message}")
                        continue
                    await self._record(
                        KIND_STEP_FAILED,
                        key,
                        {"error": error.model_dump(mode="json")},
                        meta,
                        position,
                    )
                    raise StepFailed(
                        key, error.type, error.message, attempts=attempt, instance_id=self.run_id
                    ) from exc
            meta.update(timing(started, clock.now()))
            if result_model is not None:
                meta["model"] = result_model
            await self._record(KIND_STEP, key, {"result": result}, meta, position, completed=True)
            if result_model is None and model is None:
                return result  # plain JSON data: what decode_result gives back
            return decode_result(result, result_model, model, fn)

    def _record(
        self,
        kind: str,
        key: str,
        payload: dict[str, Any],
        meta: dict[str, Any],
        position: int,
        *,
        completed: bool = False,
    ) -> Coroutine[Any, Any, None]:
        # the write itself, awaited by the caller: no coroutine frame of its own between
        return self.write(
            lambda _tx, snap: step_row(kind, key, payload, meta, snap, completed, self.suspending),
            position=position,
        )

    # ------------------------------------------------------------ writes
