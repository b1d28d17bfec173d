"""The workflow engine: a client that steers runs and an executor that executes them here.

A run is a statewf instance of kind ``"workflow"``; everything it does is a row in
the same transition log as machine instances. A :class:`WorkflowEngine` has a
:class:`~durable.Client` (every operation on runs) and an
:class:`~durable.execution.executor.Executor` (each run an asyncio task of this process,
held under a lease, woken by its scheduler when due); database work runs in a
small thread pool.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from durable.authoring.current import read_only
from durable.authoring.refs import Served
from durable.authoring.workflow import Workflow
from durable.client import Client
from durable.control.claim import DEFAULT_CRASH_LIMIT, DEFAULT_LEASE
from durable.control.start import check_start_ids, engine_of, new_run
from durable.errors import EngineClosed
from durable.execution.executor import Executor
from durable.execution.leases import Leases, new_worker_id
from durable.execution.registry import Registry, WorkflowLike
from durable.execution.runner import RunExecutor
from durable.execution.writer import RunHost
from durable.log.export import RunHistory
from durable.log.records import HumanTask, Progress, StepTimeline, WorkflowRun
from durable.log.rows import RunSpec, route_columns
from durable.log.views import output_of, run_of
from statewf.clock import Clock
from statewf.engine import Engine, check_id
from statewf.errors import InvalidInput
from statewf.records import Page
from statewf.store import DatabaseEngine
from statewf.store.leases import Lease


class WorkflowEngine:
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
        credentials: any object (or a mapping, kept read-only) that workflow code and
            steps executed here read with :func:`durable.credentials` (or
            ``ctx.credentials``): API keys, clients, settings of this process. Never
            written to the log or to log lines.

    Use it as ``async with WorkflowEngine(url, workflows=[...]) as engine: ...``, or
    call :meth:`start` and :meth:`close` yourself. Methods that start or resume runs
    call :meth:`start` on first use. Every operation of :class:`~durable.Client` is
    here too (``engine.client`` is that client), and pokes the scheduler when it
    makes a run due.
    """

    def __init__(
        self,
        engine: Engine | DatabaseEngine | str | None = None,
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
        credentials: Any = None,
    ) -> None:
        if lease <= 0 or crash_limit < 1 or (concurrency is not None and concurrency < 1):
            raise InvalidInput(
                "lease must be positive, crash_limit at least 1 and concurrency at least 1 "
                f"(got lease={lease}, crash_limit={crash_limit}, concurrency={concurrency})"
            )
        self.engine, self._owns_engine = engine_of(engine, schema, table_prefix, clock)
        self.clock: Clock = clock or self.engine.clock
        #: every operation on runs (start, trigger, pause, cancel, inspect, repair)
        self.client = Client(self.engine, clock=self.clock)
        self._registry = Registry()
        host = RunHost(
            store=self.engine.store,
            clock=self.clock,
            max_bytes=self.engine.max_payload_bytes,
            rand=random.Random(seed).random,
            executor=ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="durable-db"),
            credentials=read_only(credentials),
        )
        leases = Leases(
            host=host,
            registry=self._registry,
            owner=worker_id or new_worker_id(),
            seconds=float(lease),
            crash_limit=crash_limit,
            queues=list(queues) if queues is not None else None,
            labels=dict(labels or {}),
        )
        #: the runs executing in this process, their leases and scheduler
        self.executor = Executor(
            host,
            self._registry,
            leases,
            recover=recover,
            concurrency=concurrency,
            poll_interval=poll_interval,
        )
        self._run_scheduler = scheduler
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False
        self.register(*workflows)

    @property
    def worker_id(self) -> str:
        """This engine's id as the holder of leases (host, pid and a random part)."""
        return self.executor.leases.owner

    # ------------------------------------------------------------ set-up

    def register(self, *workflows: WorkflowLike) -> None:
        """Make workflows executable by this engine (several versions of one name may coexist)."""
        self._registry.register(*workflows)

    def workflows(self) -> list[Workflow[Any, Any]]:
        """The registered workflows, by name and version."""
        return self._registry.workflows()

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
            self.executor.start(scheduler=False)
            if self.executor.recover:
                await self.executor.recover_runs()
            if self._run_scheduler:
                self.executor.start(scheduler=True)
            # only now: a start that failed half-way can be tried again
            self._started = True

    async def close(self) -> None:
        """Stop executing (runs stay in progress, resumed on the next start); free resources."""
        if self._closed:
            return
        self._closed = True
        await self.executor.close()
        await self.client.close()
        if self._owns_engine:
            self.engine.close()

    async def __aenter__(self) -> WorkflowEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ executing here

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
        wf = self._registry.resolve(workflow)
        check_start_ids(run_id, resource_id, idempotency_key)
        stored_input = wf.validate_input(input, max_bytes=self.engine.max_payload_bytes)
        record, snapshot = new_run(
            RunSpec(wf.name, wf.version, wf.plan.to_json(), wf.timeout),
            run_id or uuid.uuid4().hex,
            stored_input,
            resource_id,
            idempotency_key,
            self.clock.now(),
        )
        route = route_columns(wf.queue if queue is None else queue, priority, labels)
        lease = {"lease_owner": self.worker_id, "lease_epoch": 1}
        created, existing, until = await self.executor.host.insert_run(
            snapshot, record, {**route, **lease}, timedelta(seconds=self.executor.leases.seconds)
        )
        if not created:
            assert existing is not None
            return run_of(existing)
        assert until is not None
        executor = RunExecutor(self.executor.host, wf, snapshot, [record])
        executor.lease = Lease(owner=self.worker_id, epoch=1, expires_at=until)
        self.executor.spawn(executor)
        return run_of(snapshot)

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
        task = self.executor.tasks.get(run_id)
        await self.client.get_run(run_id, resource_id=resource_id)  # scope check
        if task is not None:
            await asyncio.shield(task)
        else:
            await self.executor.execute_here(run_id)
        return await self.client.get_run(run_id, resource_id=resource_id)

    async def recover_runs(self) -> list[str]:
        """Take up every run in progress that nobody holds (within ``concurrency``); their ids."""
        return await self.executor.recover_runs()

    async def wake_due(self) -> list[str]:
        """Claim the runs this engine may take now and execute them; their ids.

        Due waiting runs, and (with ``recover``) runs in progress that nobody holds,
        within this engine's ``concurrency``, queues and labels.
        """
        return await self.executor.wake_due()

    async def wait_for_run(
        self,
        run_id: str,
        *,
        resource_id: str | None = None,
        timeout: float | None = None,
        poll_interval: float = 0.05,
    ) -> WorkflowRun:
        """Wait until a run is completed, failed or cancelled; the run.

        If the run's execution in this engine stopped unexpectedly (a crash), that
        exception is raised. Raises ``TimeoutError`` after ``timeout`` real seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                executing = self.executor.running.get(run_id)
                await self.executor.settled(run_id)
                # a run whose final row this engine committed: that row's snapshot is
                # the run (its scope checked as the read checks it); no read
                ended = executing.ended_with if executing is not None else None
                if ended is not None and resource_id in (None, ended.resource_id):
                    return run_of(ended)
                run = await self.client.get_run(run_id, resource_id=resource_id)
                if run.finished:
                    return run
                if run_id not in self.executor.tasks:
                    await asyncio.sleep(poll_interval)

    async def result(
        self, run_id: str, *, resource_id: str | None = None, timeout: float | None = None
    ) -> Any:
        """Wait for a run and return its output; :class:`WorkflowFailed` if it did not complete."""
        return output_of(await self.wait_for_run(run_id, resource_id=resource_id, timeout=timeout))

    async def cancel_workflow(
        self, run_id: str, *, resource_id: str | None = None, reason: str | None = None
    ) -> WorkflowRun:
        """Cancel a run: a ``cancel`` row is appended and its execution here is stopped.

        A run executing in another process stops at its next step boundary (its next
        write finds the run cancelled). Raises :class:`RunFinished` for a finished run.
        """
        run = await self.client.cancel_workflow(run_id, resource_id=resource_id, reason=reason)
        await self.executor.stop(run_id)
        return run

    # ------------------------------------------------------------ the client's operations

    async def trigger_event(
        self,
        run_id: str,
        event: str,
        data: Any = None,
        *,
        resource_id: str | None = None,
        by: str | None = None,
    ) -> WorkflowRun:
        """Send ``event`` with ``data`` to a run (see :meth:`Client.trigger_event`)."""
        run = await self.client.trigger_event(run_id, event, data, resource_id=resource_id, by=by)
        self.executor.wake_soon()
        return run

    async def pause_workflow(
        self, run_id: str, *, resource_id: str | None = None, by: str | None = None
    ) -> WorkflowRun:
        """Pause a run: it stops at its next step boundary until :meth:`resume_workflow`."""
        return await self.client.pause_workflow(run_id, resource_id=resource_id, by=by)

    async def resume_workflow(
        self, run_id: str, *, resource_id: str | None = None, by: str | None = None
    ) -> WorkflowRun:
        """Resume a paused run (paused from outside or by ``ctx.step.pause``)."""
        run = await self.client.resume_workflow(run_id, resource_id=resource_id, by=by)
        self.executor.wake_soon()
        return run

    async def fast_forward_workflow(
        self,
        run_id: str,
        data: Any = None,
        *,
        resource_id: str | None = None,
        by: str | None = None,
    ) -> WorkflowRun:
        """Satisfy whatever the run waits on now (see :meth:`Client.fast_forward_workflow`)."""
        run = await self.client.fast_forward_workflow(run_id, data, resource_id=resource_id, by=by)
        self.executor.wake_soon()
        return run

    async def approve(
        self,
        run_id: str,
        *,
        reviewer: str,
        comment: str | None = None,
        step: str | None = None,
        resource_id: str | None = None,
        answer: Any = None,
    ) -> WorkflowRun:
        """Approve the run's pending ``ctx.step.approval`` (see :meth:`Client.approve`)."""
        run = await self.client.approve(
            run_id,
            reviewer=reviewer,
            comment=comment,
            step=step,
            resource_id=resource_id,
            answer=answer,
        )
        self.executor.wake_soon()
        return run

    async def complete_task(
        self,
        run_id: str,
        data: Any = None,
        *,
        reviewer: str,
        comment: str | None = None,
        step: str | None = None,
        resource_id: str | None = None,
    ) -> WorkflowRun:
        """Complete the run's pending ``ctx.step.human_task`` (see :meth:`Client.complete_task`)."""
        run = await self.client.complete_task(
            run_id, data, reviewer=reviewer, comment=comment, step=step, resource_id=resource_id
        )
        self.executor.wake_soon()
        return run

    async def tasks(
        self,
        *,
        assignee: str | None = None,
        resource_id: str | None = None,
        workflow: str | None = None,
    ) -> list[HumanTask]:
        """The open human tasks, oldest first (see :meth:`Client.tasks`)."""
        return await self.client.tasks(
            assignee=assignee, resource_id=resource_id, workflow=workflow
        )

    async def get_task(self, run_id: str, *, resource_id: str | None = None) -> HumanTask:
        """The open human task of run ``run_id`` (see :meth:`Client.get_task`)."""
        return await self.client.get_task(run_id, resource_id=resource_id)

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
        run = await self.client.reject(
            run_id, reviewer=reviewer, reason=reason, step=step, resource_id=resource_id
        )
        self.executor.wake_soon()
        return run

    async def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """A run: status, input, output or error, timestamps (:class:`RunNotFound` if unknown)."""
        return await self.client.get_run(run_id, resource_id=resource_id)

    async def get_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | Sequence[str] | None = None,
        resource_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[WorkflowRun]:
        """A page of runs, oldest first; pass ``next_cursor`` back as ``cursor`` for more."""
        return await self.client.get_runs(
            workflow=workflow,
            status=status,
            resource_id=resource_id,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )

    async def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        """Completed and total steps of a run (total from the workflow's source, stored)."""
        return await self.client.check_progress(run_id, resource_id=resource_id)

    async def get_timeline(
        self, run_id: str, *, resource_id: str | None = None
    ) -> list[StepTimeline]:
        """Each step of a run with its attempts, durations, result or error."""
        return await self.client.get_timeline(run_id, resource_id=resource_id)

    async def dead_letters(
        self,
        *,
        workflow: str | None = None,
        include_failed: bool = True,
        resource_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[WorkflowRun]:
        """A page of dead (and, by default, failed) runs, oldest first; follow ``next_cursor``."""
        return await self.client.dead_letters(
            workflow=workflow,
            include_failed=include_failed,
            resource_id=resource_id,
            limit=limit,
            cursor=cursor,
        )

    async def retry_run(
        self, run_id: str, *, reason: str | None = None, resource_id: str | None = None
    ) -> WorkflowRun:
        """Make a failed or dead run go on from its failed step; earlier steps are replayed."""
        run = await self.client.retry_run(run_id, reason=reason, resource_id=resource_id)
        self.executor.wake_soon()
        return run

    async def discard_run(
        self, run_id: str, *, reason: str, resource_id: str | None = None
    ) -> WorkflowRun:
        """Give up a failed or dead run: it is ``cancelled``, with ``reason`` in the log."""
        return await self.client.discard_run(run_id, reason=reason, resource_id=resource_id)

    async def fork_run(
        self,
        run_id: str,
        *,
        from_step: str,
        new_run_id: str | None = None,
        resource_id: str | None = None,
    ) -> WorkflowRun:
        """A new run of the same workflow and input that replays the steps before ``from_step``."""
        run = await self.client.fork_run(
            run_id, from_step=from_step, new_run_id=new_run_id, resource_id=resource_id
        )
        self.executor.wake_soon()
        return run

    # ------------------------------------------------------------ code versions

    async def export_history(self, run_id: str, *, resource_id: str | None = None) -> RunHistory:
        """A run's whole log, to write as JSON and replay with :func:`durable.testing.replay`."""
        return await self.client.export_history(run_id, resource_id=resource_id)

    async def on_old_branch(self, patch_id: str) -> list[WorkflowRun]:
        """Runs whose log records the old branch of ``ctx.patched(patch_id)``, oldest first."""
        return await self.client.on_old_branch(patch_id)

    async def unserved_runs(
        self, served: Iterable[Served] | None = None, *, limit: int = 100, within: float = 120.0
    ) -> list[WorkflowRun]:
        """Unfinished runs of versions not in ``served`` (default: this engine's workflows;
        ``within`` is the :class:`Client`'s, unused here)."""
        pairs = self._registry.versions() if served is None else served
        return await self.client.unserved_runs(pairs, limit=limit, within=within)
