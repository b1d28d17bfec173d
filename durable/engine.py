"""The workflow engine: starts runs, executes them in-process, recovers them, reports on them.

A run is a statewf instance of kind ``"workflow"``; everything it does is a row in
the same transition log as machine instances. The engine executes each run as an
asyncio task in this process; database work runs in a small thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from durable import control
from durable.definition import Workflow
from durable.errors import (
    EngineClosed,
    WorkflowNotRegistered,
)
from durable.holding import LeaseHolder, new_worker_id
from durable.inspection import RunInspection
from durable.leases import DEFAULT_CRASH_LIMIT, DEFAULT_LEASE, ClaimedRun, Limits
from durable.operations import RunOperations
from durable.pipeline import Pipeline
from durable.records import (
    WorkflowRun,
)
from durable.report import run_of
from durable.runner import RunExecutor
from durable.scheduling import WaitControl
from durable.starting import RunSpec, create_record, engine_of, insert_run, route_columns
from durable.writer import RunHost
from statewf.clock import Clock
from statewf.engine import Engine, check_id
from statewf.errors import InvalidInput, StatewfError
from statewf.fold import apply
from statewf.records import Instance
from statewf.store.leases import Lease

log = logging.getLogger("durable")
T = TypeVar("T")

WorkflowLike = Workflow[Any, Any] | Pipeline


class WorkflowEngine(RunInspection, WaitControl, RunOperations, LeaseHolder):
    """Runs durable workflows on a statewf database.

    Args:
        engine: a :class:`statewf.Engine`, or a database URL to make one
            (``sqlite:///file.db``, ``postgresql+psycopg://...``); None uses
            ``STATEWF_DATABASE_URL`` or ``sqlite:///statewf.db``.
        workflows: workflows (or pipelines) this engine can execute.
        clock: the time source (default: the statewf engine's clock); pass a
            :class:`statewf.testing.ManualClock` to drive retries and timeouts in tests.
        recover: take up runs in progress that nobody holds: runs another engine
            released (on close) and runs whose holder died (its lease ran out). Many
            engines and workers may recover on one database; each run is held by one.
        scheduler: run the scheduler that wakes waiting runs (sleeps, events, polls)
            when they are due; several engines may share this work.
        poll_interval: longest real time, in seconds, between two looks for due runs.
        db_threads: threads for database work.
        seed: seed of the random jitter of retry delays (for reproducible tests).
        lease: seconds a run stays held by this engine without a heartbeat; another
            engine takes over a run whose holder died after this long (heartbeats
            every third of it). Leases use the wall clock, whatever ``clock`` is.
        crash_limit: a run whose executions died this many times at the same step
            is moved to the dead letters instead of being executed again.
        concurrency: most runs this engine executes at once (None: no limit). Runs
            started here with :meth:`start_workflow` always execute here.
        queues: the queues this engine claims runs from (None: every queue).
        labels: what this engine offers; a run started with labels only goes to an
            engine (or worker) that offers all of them.

    Use it as ``async with WorkflowEngine(url, workflows=[...]) as engine: ...``, or
    call :meth:`start` and :meth:`close` yourself. Methods that start or resume runs
    call :meth:`start` on first use.
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        workflows: Iterable[WorkflowLike] = (),
        clock: Clock | None = None,
        recover: bool = True,
        db_threads: int = 8,
        seed: int | None = None,
        scheduler: bool = True,
        poll_interval: float = 1.0,
        schema: str | None = None,
        table_prefix: str = "statewf_",
        lease: float = DEFAULT_LEASE,
        crash_limit: int = DEFAULT_CRASH_LIMIT,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        if lease <= 0 or crash_limit < 1 or (concurrency is not None and concurrency < 1):
            raise InvalidInput(
                "lease must be positive, crash_limit at least 1 and concurrency at least 1 "
                f"(got lease={lease}, crash_limit={crash_limit}, concurrency={concurrency})"
            )
        self.engine, self._owns_engine = engine_of(engine, schema, table_prefix, clock)
        self.clock: Clock = clock or self.engine.clock
        self.recover = recover
        self.run_scheduler = scheduler
        self.poll_interval = poll_interval
        self._scheduler: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="durable-db")
        self._random = random.Random(seed)
        self.host = RunHost(
            store=self.engine.store,
            clock=self.clock,
            max_bytes=self.engine.max_payload_bytes,
            rand=self._random.random,
            executor=self._pool,
        )
        self._workflows: dict[tuple[str, str], Workflow[Any, Any]] = {}
        self._latest: dict[str, Workflow[Any, Any]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._executors: dict[str, RunExecutor] = {}
        self._crashes: dict[str, BaseException] = {}
        self._started = False
        self._start_lock = asyncio.Lock()
        self._redrives: set[asyncio.Task[None]] = set()
        self._closed = False
        self.worker_id = worker_id or new_worker_id()
        self.lease_seconds = float(lease)
        self.crash_limit = crash_limit
        self.concurrency = concurrency
        self.queues = list(queues) if queues is not None else None
        self.labels = dict(labels or {})
        self.limits = Limits()
        self._heartbeat: asyncio.Task[None] | None = None
        #: runs whose execution here crashed: still held (a dead process would hold them)
        self._crashed: set[str] = set()
        self.register(*workflows)

    # ------------------------------------------------------------ set-up

    def register(self, *workflows: WorkflowLike) -> None:
        """Make workflows executable by this engine (several versions of one name may coexist)."""
        for item in workflows:
            wf = item.workflow if isinstance(item, Pipeline) else item
            if not isinstance(wf, Workflow):
                raise InvalidInput(
                    f"register() takes workflows made with @durable.workflow or "
                    f"durable.Pipeline, got {item!r}"
                )
            key = (wf.name, wf.version)
            known = self._workflows.get(key)
            if known is not None and known is not wf:
                raise InvalidInput(
                    f"workflow {wf.name!r} version {wf.version!r} is registered twice with "
                    "different code; give the new one another version="
                )
            self._workflows[key] = wf
            self._latest[wf.name] = wf

    def workflows(self) -> list[Workflow[Any, Any]]:
        """The registered workflows, by name and version."""
        return [self._workflows[k] for k in sorted(self._workflows)]

    def _definition(self, name: str, version: str | None = None) -> Workflow[Any, Any]:
        wf = self._latest.get(name) if version is None else self._workflows.get((name, version))
        if wf is None:
            known = ", ".join(f"{n}@{v}" for n, v in sorted(self._workflows)) or "none"
            which = f"{name!r}" + (f" version {version!r}" if version else "")
            raise WorkflowNotRegistered(
                f"workflow {which} is not registered with this engine (registered: {known}); "
                "pass it in WorkflowEngine(..., workflows=[...])",
                machine=name,
            )
        return wf

    async def start(self) -> None:
        """Start the engine: resume runs left in progress (when ``recover``). Idempotent."""
        if self._closed:
            raise EngineClosed(
                "this WorkflowEngine is closed; create a new one to start or resume runs"
            )
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            self._start_heartbeat()
            if self.recover:
                await self.recover_runs()
            if self.run_scheduler:
                self._start_scheduler()
            # only now: a start that failed half-way can be tried again
            self._started = True

    async def recover_runs(self) -> list[str]:
        """Take up every run in progress that nobody holds (within ``concurrency``); their ids."""
        resumed: list[str] = []
        while True:
            claimed = await self._claim(executing=True, due=False, limit=self.capacity())
            for item in claimed:
                self._spawn(self._executor_of(item))
                resumed.append(item.snapshot.id)
            if not claimed:
                return resumed

    def _executor_of(self, item: ClaimedRun) -> RunExecutor:
        wf = self._definition(item.snapshot.machine, item.snapshot.machine_version)
        executor = RunExecutor(self.host, wf, item.snapshot, item.records)
        executor.lease = item.lease
        return executor

    def _prepare(self, snapshot: Instance) -> dict[str, Any]:
        """Context a claim row adds to a run started by a client without the code."""
        wf = self._workflows.get((snapshot.machine, snapshot.machine_version))
        if wf is None:
            return {}
        fields: dict[str, Any] = {}
        if "plan" not in snapshot.context:
            fields["plan"] = wf.plan.to_json()
        if wf.timeout is not None and "deadline" not in snapshot.context:
            deadline = snapshot.created_at + timedelta(seconds=wf.timeout)
            fields["deadline"] = deadline.isoformat()
        return fields

    async def close(self) -> None:
        """Stop executing (runs stay in progress, resumed on the next start); free resources."""
        if self._closed:
            return
        self._closed = True
        await self._stop_scheduler()
        await self._stop_heartbeat()
        tasks = [*self._tasks.values(), *self._redrives]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        # no database call is in flight after this (a claim cancelled mid-way may
        # still have committed): then hand back everything this engine holds
        self._pool.shutdown(wait=True)
        await asyncio.to_thread(self._release_everything)
        await self._closing()
        if self._owns_engine:
            self.engine.close()

    async def _closing(self) -> None:
        """Last words before the database engine closes (a worker records its stop)."""

    async def __aenter__(self) -> WorkflowEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ starting runs

    async def start_workflow(
        self,
        workflow: str | WorkflowLike,
        input: Any = None,
        *,
        run_id: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> WorkflowRun:
        """Create a run and start executing it in this process; the new run.

        Args:
            workflow: the workflow (or its name).
            input: the input; validated against the workflow's ``input`` type. Invalid
                input raises :class:`~statewf.errors.InvalidInput` and creates nothing.
            run_id: choose the run's id (default: a random hex id); an id that exists
                raises :class:`~statewf.errors.DuplicateInstance`.
            resource_id: the owner/tenant; every later call may pass it to scope access.
            idempotency_key: a second start with the same workflow and key returns the
                first run and starts nothing (even when both race).
            queue, priority, labels: where the run goes if this engine releases it
                (on close) and another engine or worker takes it up.
        """
        await self.start()
        if isinstance(workflow, str):
            wf = self._definition(workflow)
        else:
            wf = workflow.workflow if isinstance(workflow, Pipeline) else workflow
            self._definition(wf.name, wf.version)
        if run_id is not None:
            check_id(run_id, "run id")
        if resource_id is not None:
            check_id(resource_id, "resource_id")
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key")
        stored_input = wf.validate_input(input, max_bytes=self.engine.max_payload_bytes)
        record = create_record(
            RunSpec(wf.name, wf.version, wf.plan.to_json(), wf.timeout),
            run_id or uuid.uuid4().hex,
            stored_input,
            resource_id,
            idempotency_key,
            self.clock.now(),
        )
        snapshot = apply(None, record)
        route = route_columns(wf.queue if queue is None else queue, priority, labels)
        lease = {"lease_owner": self.worker_id, "lease_epoch": 1}
        created, existing, until = await self.host.db(
            insert_run,
            self.engine.store,
            snapshot,
            record,
            {**route, **lease},
            False,
            timedelta(seconds=self.lease_seconds),
        )
        if not created:
            assert existing is not None
            return run_of(existing)
        assert until is not None
        executor = RunExecutor(self.host, wf, snapshot, [record])
        executor.lease = Lease(owner=self.worker_id, epoch=1, expires_at=until)
        self._spawn(executor)
        return run_of(snapshot)

    # ------------------------------------------------------------ executing runs

    def _workflow_versions(self) -> list[tuple[str, str]]:
        return sorted(self._workflows)

    def _spawn(self, executor: RunExecutor) -> None:
        run_id = executor.run_id
        self._executors[run_id] = executor
        self._tasks[run_id] = asyncio.get_running_loop().create_task(
            self._drive(executor), name=f"durable-run-{run_id}"
        )

    async def _drive(self, executor: RunExecutor) -> None:
        run_id = executor.run_id
        try:
            outcome = await executor.execute()
            if outcome.kind == "suspended":
                self._wake_soon()  # the scheduler learns the new wake-up time now
            if executor.write_failed is not None:
                self._redrive_later(run_id, attempt=1)
        except asyncio.CancelledError:
            if not executor.cancelled:
                raise
        except (KeyboardInterrupt, SystemExit):
            # the process goes down with the run in flight: its lease is left to run
            # out, so the next claim (by any worker) counts this execution as a crash
            self._crashed.add(run_id)
            raise
        except BaseException as exc:  # a crash: leave the run in progress, as a dead process would
            self._crashes[run_id] = exc
            self._crashed.add(run_id)  # still held: released on close, or taken over
            log.error("run %s stopped unexpectedly and stays in progress: %r", run_id, exc)
        finally:
            done = executor.write_failed is None and run_id not in self._crashed
            if done and executor.lease is not None and not executor.released and not self._closed:
                await self._release([run_id])
            self._tasks.pop(run_id, None)
            self._executors.pop(run_id, None)
            if self._more_work:
                self._wake_soon()

    def _redrive_later(self, run_id: str, *, attempt: int) -> None:
        """Take up again, after a back-off, a run whose log writes kept failing.

        The run was left in progress (nothing wrong was recorded); without this only
        the next engine start would resume it. Real time, like the scheduler's own
        retries after database errors.
        """
        if self._closed:
            return
        delay = min(60.0, self.poll_interval * 2**attempt)

        async def redrive() -> None:
            await asyncio.sleep(delay)
            if self._closed or run_id in self._tasks or run_id in self._executors:
                return
            try:
                claimed = await self._claim(
                    executing=True, due=False, limit=1, only=run_id, own=[run_id]
                )
                for item in claimed:
                    self._spawn(self._executor_of(item))
            except StatewfError as exc:  # the database is still away: later
                log.warning("run %s: cannot take it up again yet: %s", run_id, exc)
                self._redrive_later(run_id, attempt=attempt + 1)

        task = asyncio.get_running_loop().create_task(redrive(), name=f"durable-redrive-{run_id}")
        self._redrives.add(task)
        task.add_done_callback(self._redrives.discard)

    async def resume(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Execute a run to its end (or its next wait) in the caller's task; the run after.

        For runs left ``running`` or ``pending`` (after a crash, or on purpose with
        ``scheduler=False``). A finished, waiting or paused run is returned as it is
        (waiting runs are woken by the scheduler, paused ones by
        :meth:`resume_workflow`), and so is a run another live engine or worker
        holds; a run already executing in this engine is awaited.
        Recorded steps are replayed from the log, not run again.
        """
        await self.start()
        check_id(run_id, "run id")
        task = self._tasks.get(run_id)
        if task is not None:
            await self.get_run(run_id, resource_id=resource_id)  # scope check
            await asyncio.shield(task)
            return await self.get_run(run_id, resource_id=resource_id)
        await self.get_run(run_id, resource_id=resource_id)  # scope check
        # a run this engine holds but stopped executing (after failed writes) is its own
        claimed = await self._claim(executing=True, due=False, limit=1, only=run_id, own=[run_id])
        if claimed:
            executor = self._executor_of(claimed[0])
            self._executors[run_id] = executor
            try:
                await executor.execute()
            finally:
                self._executors.pop(run_id, None)
                await self._release([run_id])
        return await self.get_run(run_id, resource_id=resource_id)

    async def cancel_workflow(
        self, run_id: str, *, resource_id: str | None = None, reason: str | None = None
    ) -> WorkflowRun:
        """Cancel a run: a ``cancel`` row is appended and its execution here is stopped.

        A run executing in another process stops at its next step boundary (its next
        write finds the run cancelled). Raises :class:`RunFinished` for a finished run.
        """
        check_id(run_id, "run id")

        snapshot = await self.host.db(
            control.cancel, self.engine.store, run_id, resource_id, reason, self.clock.now()
        )
        executor = self._executors.get(run_id)
        if executor is not None:
            executor.cancelled = True
            executor.finished = True
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        return run_of(snapshot)
