"""The waiting side of the engine: the scheduler and the operations that wake runs.

:class:`WaitControl` is mixed into :class:`~durable.WorkflowEngine`. Its scheduler
task claims due runs (``wake_at <= now``; ``SKIP LOCKED`` on PostgreSQL, so several
engines share the work and each wake-up happens once) and replays them. It sleeps
until the next known wake-up, at most ``poll_interval`` seconds, and is poked at
once when this engine sends an event, resumes or fast-forwards a run; on
PostgreSQL, other processes' events wake it through LISTEN/NOTIFY (a hint only:
the table is the truth, and the poll catches anything a notification missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from durable import control
from durable.leases import ClaimedRun, Limits
from durable.records import PAUSED, RUN_KIND, WAITING, WorkflowRun
from durable.report import run_of
from durable.runner import RunExecutor
from durable.waits import Approval
from durable.writer import RunHost
from statewf.clock import SystemClock
from statewf.engine import check_event_name, check_id
from statewf.errors import InvalidInput
from statewf.records import Instance
from statewf.store.runs import WakeListener, next_wake

log = logging.getLogger("durable")

#: Real seconds between looks at a manual (test) clock.
_MANUAL_TICK = 0.005
#: The shortest wait between two scheduler passes (no busy loop, whatever happens).
_MIN_PAUSE = 0.005


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it is done.

    Cancelled again until it ends: ``asyncio.wait_for`` (Python 3.11) can drop a
    cancellation that arrives as its inner wait completes (a poke, say). Waiting
    with ``asyncio.wait`` leaves a cancellation of the caller itself alone.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)


class WaitControl:
    """Scheduler and wait operations of a workflow engine (a mixin)."""

    host: RunHost
    poll_interval: float
    _tasks: dict[str, asyncio.Task[None]]
    _executors: dict[str, RunExecutor]
    _poke: asyncio.Event
    _scheduler: asyncio.Task[None] | None

    # provided by WorkflowEngine
    def _spawn(self, executor: RunExecutor) -> None:
        raise NotImplementedError

    def _workflow_versions(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _executing(self) -> set[str]:
        """Runs this engine is executing: scheduled tasks and ``resume()`` callers alike."""
        return set(self._tasks) | set(self._executors)

    recover: bool
    limits: Limits
    _more_work: bool = False

    if TYPE_CHECKING:  # provided by LeaseHolder and WorkflowEngine (later in the MRO)

        def _executor_of(self, item: ClaimedRun) -> RunExecutor: ...

        async def _claim(
            self,
            *,
            executing: bool,
            due: bool,
            limit: int,
            only: str | None = None,
            own: Collection[str] = (),
        ) -> list[ClaimedRun]: ...

        def capacity(self) -> int: ...

        async def _snapshot(self, run_id: str, resource_id: str | None) -> Instance: ...

    # ------------------------------------------------------------ the scheduler

    def _start_scheduler(self) -> None:
        self._poke = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._scheduler = loop.create_task(self._schedule(), name="durable-scheduler")
        # PostgreSQL: a NOTIFY from another process wakes the scheduler at once
        self._listener = WakeListener(
            self.host.store, lambda: loop.call_soon_threadsafe(self._poke.set)
        )
        self._listener.start()

    async def _stop_scheduler(self) -> None:
        listener = getattr(self, "_listener", None)
        if listener is not None:
            listener.stop()
        if self._scheduler is not None:
            await stop_task(self._scheduler)
            self._scheduler = None

    async def wake_due(self) -> list[str]:
        """Claim the runs this engine may take now and execute them; their ids.

        Due waiting runs, and (with ``recover``) runs in progress that nobody holds,
        within this engine's ``concurrency``, queues and labels.
        """
        limit = self.capacity()
        claimed = await self._claim(executing=self.recover, due=True, limit=limit)
        # a full claim (or none for want of a free slot) may have left work behind:
        # look again as soon as a run here ends, rather than at the next poll
        # (under flow-control limits, a run that ends may free a queue's or a
        # resource's slot for a run the claim had to leave)
        self._more_work = len(claimed) >= limit or self.limits.any
        for item in claimed:
            self._spawn(self._executor_of(item))
        return [item.snapshot.id for item in claimed]

    async def _next_wake(self) -> datetime | None:
        versions = self._workflow_versions()
        if not versions:
            return None
        executing = self._executing()

        def query() -> datetime | None:
            with self.host.store.transaction() as tx:
                return next_wake(tx, RUN_KIND, versions, (WAITING, PAUSED), exclude=executing)

        return await self.host.db(query)

    async def _schedule(self) -> None:
        realtime = isinstance(self.host.clock, SystemClock)
        while True:
            try:
                await self.wake_due()
                wake = await self._next_wake()
            except Exception as exc:  # the database is away, say: try again at the next poll
                log.warning("scheduler: %s: %s", type(exc).__name__, exc)
                wake = None
            self._poke.clear()
            until = time.monotonic() + self.poll_interval
            while not self._poke.is_set():
                left = until - time.monotonic()
                if left <= 0:
                    break
                if wake is not None and self.host.clock.now() >= wake:
                    break
                pause = left
                if wake is not None:
                    ahead = (wake - self.host.clock.now()).total_seconds()
                    pause = min(left, ahead) if realtime else min(left, _MANUAL_TICK)
                with contextlib.suppress(TimeoutError):
                    # never a busy spin, whatever the clock and the database say
                    await asyncio.wait_for(self._poke.wait(), timeout=max(pause, _MIN_PAUSE))

    def _wake_soon(self) -> None:
        poke = getattr(self, "_poke", None)
        if poke is not None:
            poke.set()

    # ------------------------------------------------------------ operations

    async def trigger_event(
        self,
        run_id: str,
        event: str,
        data: Any = None,
        *,
        resource_id: str | None = None,
        by: str | None = None,
    ) -> WorkflowRun:
        """Send ``event`` with ``data`` to a run; the run after (``by``: who, for the log).

        The event is recorded in the run's log. If the run waits for it, the run is
        resumed; otherwise the event is kept for the next ``wait_for`` of that name.
        Data that does not match the waiting step's ``schema`` raises
        :class:`~statewf.errors.InvalidPayload` and records nothing. Events to a
        finished run raise :class:`~durable.RunFinished`.
        """
        check_id(run_id, "run id")
        check_event_name(event)
        snap = await self.host.db(
            control.trigger,
            self.host.store,
            run_id,
            resource_id,
            event,
            data,
            self.host.clock.now(),
            self.host.max_bytes,
            by,
        )
        self._wake_soon()
        return run_of(snap)

    async def pause_workflow(
        self, run_id: str, *, resource_id: str | None = None, by: str | None = None
    ) -> WorkflowRun:
        """Pause a run: it stops at its next step boundary until :meth:`resume_workflow`."""
        check_id(run_id, "run id")
        snap = await self.host.db(
            control.pause, self.host.store, run_id, resource_id, self.host.clock.now(), by
        )
        return run_of(snap)

    async def resume_workflow(
        self, run_id: str, *, resource_id: str | None = None, by: str | None = None
    ) -> WorkflowRun:
        """Resume a paused run (paused from outside or by ``ctx.step.pause``)."""
        check_id(run_id, "run id")
        snap = await self.host.db(
            control.resume, self.host.store, run_id, resource_id, self.host.clock.now(), by
        )
        self._wake_soon()
        return run_of(snap)

    async def fast_forward_workflow(
        self,
        run_id: str,
        data: Any = None,
        *,
        resource_id: str | None = None,
        by: str | None = None,
    ) -> WorkflowRun:
        """Satisfy whatever the run waits on now: a sleep ends, a wait gets an event
        with ``data``, a poll gets ``data`` as its result, a pause is resumed.

        A run that waits on nothing is left as it is. Meant for tests and operations.
        """
        check_id(run_id, "run id")
        snap, event = await self.host.db(
            control.fast_forward,
            self.host.store,
            run_id,
            resource_id,
            data,
            self.host.clock.now(),
            by,
        )
        if event is not None:
            return await self.trigger_event(
                run_id, event, {} if data is None else data, resource_id=resource_id, by=by
            )
        if snap.status == "paused":
            return await self.resume_workflow(run_id, resource_id=resource_id, by=by)
        self._wake_soon()
        return run_of(snap)

    async def approve(
        self,
        run_id: str,
        *,
        reviewer: str,
        comment: str | None = None,
        step: str | None = None,
        resource_id: str | None = None,
    ) -> WorkflowRun:
        """Approve the run's pending ``ctx.step.approval`` (or the one named ``step``)."""
        return await self._decide(run_id, True, reviewer, comment, step, resource_id)

    async def reject(
        self,
        run_id: str,
        *,
        reviewer: str,
        reason: str,
        step: str | None = None,
        resource_id: str | None = None,
    ) -> WorkflowRun:
        """Reject the run's pending approval; the workflow sees ``approved=False``."""
        return await self._decide(run_id, False, reviewer, reason, step, resource_id)

    async def _decide(
        self,
        run_id: str,
        approved: bool,
        reviewer: str,
        reason: str | None,
        step: str | None,
        resource_id: str | None,
    ) -> WorkflowRun:
        if not isinstance(reviewer, str) or not reviewer:
            raise InvalidInput("reviewer must be a non-empty string (who decided)")
        if step is None:
            run = await self._snapshot(run_id, resource_id)
            waiting = run.context.get("waiting") or {}
            event = str(waiting.get("event", ""))
            if not event.startswith("approval:"):
                raise InvalidInput(
                    f"run {run_id!r} is not waiting for an approval; name the step= to "
                    "record a decision in advance",
                    instance_id=run_id,
                )
            due = run.wake_at is not None and run.wake_at <= self.host.clock.now()
            if run.status != "waiting" or due:
                raise InvalidInput(
                    f"run {run_id!r} is not waiting for a decision right now (a decision for "
                    f"{event.removeprefix('approval:')!r} may be queued already); try again "
                    "when it waits, or name the step= to decide in advance",
                    instance_id=run_id,
                )
            step = event.removeprefix("approval:")
        decision = Approval(approved=approved, reviewer=reviewer, reason=reason)
        return await self.trigger_event(
            run_id, f"approval:{step}", decision.model_dump(), resource_id=resource_id
        )
