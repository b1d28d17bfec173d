"""Executing runs in this process: one asyncio task per run, under a lease, woken when due.

An :class:`Executor` takes runs (those its engine starts, and those it claims: runs
in progress that nobody holds, with ``recover``, and waiting runs whose time has
come), executes each as a task, extends their leases while they execute and hands
them back when they wait or end. Its scheduler is a :class:`~durable.execution.timing.WakeLoop`
that claims due runs (``SKIP LOCKED`` on PostgreSQL, so several engines share the
work and each wake-up happens once); it sleeps until the next known wake-up, at most
``poll_interval`` seconds, is poked when this process makes a run due, and on
PostgreSQL also by other processes (LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from durable.authoring.current import using_credentials
from durable.control.claim import ClaimedRun
from durable.control.versions import unserved_versions
from durable.execution.folding import WakeFold
from durable.execution.leases import Leases
from durable.execution.registry import Registry
from durable.execution.runner import RunExecutor
from durable.execution.timing import WakeLoop, stop_task
from durable.execution.writer import RunHost
from durable.log.records import PAUSED, RUN_KIND, WAITING
from statewf.errors import StatewfError
from statewf.store.runs import next_wake

log = logging.getLogger("durable")

#: Most runs one claim transaction takes.
CLAIM_BATCH = 100


@dataclass(frozen=True)
class _Woken:
    """A scheduler claim: the runs it took, and the next wake-up if the claim read it."""

    ids: list[str]
    asked: bool
    next_wake: datetime | None


class Executor:
    """The runs this process executes, their tasks, leases and scheduler."""

    def __init__(
        self,
        host: RunHost,
        registry: Registry,
        leases: Leases,
        *,
        recover: bool,
        concurrency: int | None,
        poll_interval: float,
    ) -> None:
        self.host = host
        self.registry = registry
        self.leases = leases
        self.recover = recover
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        #: the task executing each run, by run id
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: the executor of each run executing here (tasks and ``resume()`` callers)
        self.running: dict[str, RunExecutor] = {}
        #: what stopped a run's execution here unexpectedly, until someone waits for it
        self.crashes: dict[str, BaseException] = {}
        #: runs whose execution here crashed: still held (a dead process would hold them)
        self.crashed: set[str] = set()
        self.closed = False
        self._redrives: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._scheduler: WakeLoop | None = None
        self._more_work = False
        #: runs a scheduler pass left out because they were executing here: when one
        #: stops, the scheduler looks again (it may have been made due meanwhile, after
        #: its release read it, by an event whose NOTIFY that pass already answered)
        self._passed_over: set[str] = set()
        #: runs spawned by a claim whose transaction is still open (no heartbeat yet)
        self._unclaimed: set[str] = set()
        #: versions warned about as unserved, and when the scheduler last looked
        self._warned: set[tuple[str, str]] = set()
        self._unserved_at: datetime | None = None

    # ------------------------------------------------------------ which runs

    def executing(self) -> set[str]:
        """Runs this process is executing: scheduled tasks and ``resume()`` callers alike."""
        return set(self.tasks) | set(self.running)

    def capacity(self) -> int:
        """How many more runs this process may take now (``concurrency`` minus held runs)."""
        if self.concurrency is None:
            return CLAIM_BATCH
        return max(0, min(CLAIM_BATCH, self.concurrency - len(self.executing())))

    async def claim(
        self,
        *,
        executing: bool,
        due: bool,
        limit: int,
        only: str | None = None,
        own: Collection[str] = (),
    ) -> list[ClaimedRun]:
        """Claim up to ``limit`` runs, leaving out those executing here already."""
        return await self.leases.claim(
            executing=executing,
            due=due,
            limit=limit,
            exclude=self.executing(),
            only=only,
            own=own,
        )

    def executor_of(self, item: ClaimedRun) -> RunExecutor:
        """The executor of a claimed run, from the registered code of its version."""
        wf = self.registry.definition(item.snapshot.machine, item.snapshot.machine_version)
        executor = RunExecutor(self.host, wf, item.snapshot, item.records)
        executor.lease = item.lease
        return executor

    # ------------------------------------------------------------ starting and stopping

    def start(self, *, scheduler: bool) -> None:
        """Start the heartbeat and (with ``scheduler``) the scheduler. Idempotent."""
        loop = asyncio.get_running_loop()
        if self._heartbeat is None:  # a start tried again after a database error
            self._heartbeat = loop.create_task(
                self._beat_forever(), name=f"durable-heartbeat-{self.leases.owner}"
            )
        if scheduler and self._scheduler is None:
            self._scheduler = WakeLoop(
                "scheduler", self._scheduler_pass, self.host.clock, self.poll_interval
            )
            self._scheduler.start(listen=self.host.store)

    async def stop_scheduler(self) -> None:
        """Claim nothing more from here on."""
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None

    async def close(self) -> None:
        """Stop every execution and the heartbeat; hand back every run held (blocking work)."""
        self.closed = True
        await self.stop_scheduler()
        if self._heartbeat is not None:
            await stop_task(self._heartbeat)
            self._heartbeat = None
        tasks = [*self.tasks.values(), *self._redrives]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        # no database call is in flight after this (a claim cancelled mid-way may
        # still have committed): then hand back everything this engine holds
        self.host.close()
        if self.host.executor is not None:
            self.host.executor.shutdown(wait=True)
        await asyncio.to_thread(self.leases.release_everything, set(self.crashed))

    def wake_soon(self) -> None:
        """Make the scheduler look for due runs now (a run was made due here)."""
        if self._scheduler is not None:
            self._scheduler.poke()

    # ------------------------------------------------------------ executing

    def spawn(self, executor: RunExecutor) -> None:
        """Execute a run as a task of this process."""
        run_id = executor.run_id
        self.running[run_id] = executor
        self.tasks[run_id] = asyncio.get_running_loop().create_task(
            self._drive(executor), name=f"durable-run-{run_id}"
        )

    async def _drive(self, executor: RunExecutor) -> None:
        run_id = executor.run_id
        try:
            with using_credentials(self.host.credentials):
                outcome = await executor.execute(own_task=True)
            if outcome.kind == "suspended" and executor.snapshot.wake_at is not None:
                # the scheduler learns the new wake-up time now; a run that waits with
                # none (an event, no timeout) is woken by whoever makes it due (a
                # NOTIFY), or by its release below if that happened meanwhile
                self.wake_soon()
            if executor.write_failed is not None:
                self._redrive_later(run_id, attempt=1)
        except asyncio.CancelledError:
            if not executor.cancelled:
                raise
        except (KeyboardInterrupt, SystemExit):
            # the process goes down with the run in flight: its lease is ended, not
            # handed back, so the next claim (by any worker) counts this as a crash
            self.crashed.add(run_id)
            raise
        except BaseException as exc:  # a crash: leave the run in progress, as a dead process would
            self.crashes[run_id] = exc
            self.crashed.add(run_id)  # still held: released on close, or taken over
            log.error("run %s stopped unexpectedly and stays in progress: %r", run_id, exc)
        finally:
            done = executor.write_failed is None and run_id not in self.crashed
            if done and executor.lease is not None and not executor.released and not self.closed:
                await self.release([run_id])
            self.tasks.pop(run_id, None)
            self.running.pop(run_id, None)
            passed_over = self._stopped_after_a_pass(run_id)
            if self._more_work or passed_over:
                self.wake_soon()

    def _redrive_later(self, run_id: str, *, attempt: int) -> None:
        """Take up again, after a back-off, a run whose log writes kept failing.

        The run was left in progress (nothing wrong was recorded); without this only
        the next engine start would resume it. Real time, like the scheduler's own
        retries after database errors.
        """
        if self.closed:
            return
        delay = min(60.0, self.poll_interval * 2**attempt)

        async def redrive() -> None:
            await asyncio.sleep(delay)
            if self.closed or run_id in self.executing():
                return
            try:
                claimed = await self.claim(
                    executing=True, due=False, limit=1, only=run_id, own=[run_id]
                )
                for item in claimed:
                    self.spawn(self.executor_of(item))
            except StatewfError as exc:  # the database is still away: later
                log.warning("run %s: cannot take it up again yet: %s", run_id, exc)
                self._redrive_later(run_id, attempt=attempt + 1)

        task = asyncio.get_running_loop().create_task(redrive(), name=f"durable-redrive-{run_id}")
        self._redrives.add(task)
        task.add_done_callback(self._redrives.discard)

    async def execute_here(self, run_id: str) -> None:
        """Execute a run in the caller's task, if it can be claimed (or is held here idle)."""
        # a run this engine holds but stopped executing (after failed writes) is its own
        claimed = await self.claim(executing=True, due=False, limit=1, only=run_id, own=[run_id])
        if not claimed:
            return
        executor = self.executor_of(claimed[0])
        self.running[run_id] = executor
        try:
            with using_credentials(self.host.credentials):
                await executor.execute()
        finally:
            self.running.pop(run_id, None)
            await self.release([run_id])
            if self._stopped_after_a_pass(run_id):
                self.wake_soon()

    def _stopped_after_a_pass(self, run_id: str) -> bool:
        """Whether a scheduler pass left this run out while it executed here (it stopped)."""
        if run_id in self._passed_over:
            self._passed_over.discard(run_id)
            return True
        return False

    async def stop(self, run_id: str) -> None:
        """Stop the execution of a run here (it was cancelled), if there is one."""
        executor = self.running.get(run_id)
        if executor is not None:
            executor.cancel()
        task = self.tasks.get(run_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})

    async def settled(self, run_id: str) -> None:
        """Wait for the run's task here to end, if any; raise what crashed it, if anything."""
        task = self.tasks.get(run_id)
        if task is not None:
            await asyncio.wait({task})
        crash = self.crashes.pop(run_id, None)
        if crash is not None:
            raise crash

    # ------------------------------------------------------------ claiming

    async def recover_runs(self) -> list[str]:
        """Take up every run in progress that nobody holds (within ``concurrency``); their ids."""
        resumed: list[str] = []
        while True:
            claimed = await self.claim(executing=True, due=False, limit=self.capacity())
            for item in claimed:
                self.spawn(self.executor_of(item))
                resumed.append(item.snapshot.id)
            if not claimed:
                return resumed

    async def wake_due(self) -> list[str]:
        """Claim the runs this process may take now and execute them; their ids."""
        return (await self._wake_due()).ids

    async def _wake_due(self) -> _Woken:
        limit = self.capacity()
        executing = self.executing()
        self._passed_over |= executing
        # the woken runs replay while the claim's transaction is open, and their waits'
        # results commit with it (durable.execution.folding)
        fold = WakeFold(self, self.host)
        self._unclaimed = fold.spawned
        try:
            found = await self.leases.claim_due(
                executing=self.recover, limit=limit, exclude=executing, fold=fold
            )
        except BaseException:
            # whether it committed is not known here: the woken runs' writers look at the
            # log; each one that stops makes the scheduler look again
            fold.abandon()
            self._passed_over |= fold.spawned
            raise
        finally:
            self._unclaimed = set()
        claimed = found.runs
        # a full claim (or none for want of a free slot) may have left work behind:
        # look again as soon as a run here ends, rather than at the next poll
        # (under flow-control limits, a run that ends may free a queue's or a
        # resource's slot for a run the claim had to leave)
        self._more_work = len(claimed) >= limit or self.leases.limits.any
        for item in claimed:
            if item.snapshot.id not in fold.spawned:
                self.spawn(self.executor_of(item))
        if len(claimed) > len(fold.spawned):
            # the runs' tasks go first: each replays to its first write and sends it
            # before this pass ends (its bookkeeping, the scheduler's next wait)
            await asyncio.sleep(0)
        return _Woken([item.snapshot.id for item in claimed], found.asked, found.next_wake)

    async def _next_wake(self) -> datetime | None:
        versions = self.registry.versions()
        if not versions:
            return None
        executing = self.executing()

        def query() -> datetime | None:
            with self.host.store.transaction() as tx:
                return next_wake(tx, RUN_KIND, versions, (WAITING, PAUSED), exclude=executing)

        return await self.host.db(query)

    async def _scheduler_pass(self) -> datetime | None:
        # the next wake-up is read by the claim's own transaction, after its rows (one
        # round trip on PostgreSQL): no query of its own racing the woken runs' replay
        woken = await self._wake_due()
        now = self.host.clock.now()
        if self._unserved_at is None or (now - self._unserved_at).total_seconds() >= 60:
            self._unserved_at = now
            await self.warn_unserved()
        if woken.asked:
            return woken.next_wake
        return await self._next_wake()

    async def warn_unserved(self) -> dict[tuple[str, str], int]:
        """Log once per version a warning for unfinished runs of a workflow served here
        at a version not registered here; those versions and their run counts."""
        served = self.registry.versions()
        names = {name for name, _ in served}

        def read() -> dict[tuple[str, str], int]:
            with self.host.store.transaction(readonly=True) as tx:
                return unserved_versions(tx, served)

        try:
            found = {k: n for k, n in (await self.host.db(read)).items() if k[0] in names}
        except StatewfError as exc:  # the database is away: the next pass looks again
            log.debug("looking for runs of unserved versions failed: %s", exc)
            return {}
        for (name, version), count in found.items():
            if (name, version) in self._warned:
                continue
            self._warned.add((name, version))
            mine = ", ".join(repr(v) for n, v in served if n == name)
            log.warning(
                "%s unfinished run(s) of workflow %r are at version %r, which %s does not "
                "serve (it serves version %s): unless another worker registers %r version "
                "%r, nothing resumes them. Keep that version registered until `statewf runs "
                "list --unserved --app APP` lists none.",
                count,
                name,
                version,
                self.leases.owner,
                mine,
                name,
                version,
            )
        return found

    # ------------------------------------------------------------ leases

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.leases.seconds / 3)
            try:
                await self.beat()
            except StatewfError as exc:  # the database is away: the next beat tries again
                log.warning("heartbeat of %s failed: %s", self.leases.owner, exc)

    async def beat(self) -> set[str]:
        """Extend the leases of the runs executing here; the ids whose lease was lost."""
        held = {
            rid: ex.lease.epoch
            for rid, ex in self.running.items()
            if ex.lease is not None and rid not in self._unclaimed
        }
        if not held and not self.leases.writes_beats():
            return set()
        kept = await self.leases.extend(held, len(self.executing()))
        lost = set(held) - kept
        for run_id in lost:
            executor = self.running.get(run_id)
            if executor is None or executor.lease is None:
                continue  # ended meanwhile
            executor.lose_lease()
            task = self.tasks.get(run_id)
            if task is not None:
                task.cancel()
        return lost

    async def release(self, run_ids: Collection[str]) -> None:
        """Give up the leases of these runs; poke the scheduler if one of them is due already."""
        if await self.leases.release(run_ids):
            self.wake_soon()
