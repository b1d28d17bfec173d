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
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from durable import control
from durable.definition import Workflow
from durable.errors import (
    EngineClosed,
    WorkflowNotRegistered,
)
from durable.inspection import RunInspection, _not_found, _visible
from durable.operations import RunOperations
from durable.pipeline import Pipeline
from durable.records import (
    IN_PROGRESS,
    KIND_RECOVER,
    RUN_KIND,
    RUNNING,
    TERMINAL,
    WorkflowRun,
)
from durable.report import run_of
from durable.runner import RunExecutor
from durable.scheduling import WaitControl
from durable.signals import Stop
from durable.writer import RunHost
from statewf.clock import Clock
from statewf.engine import Engine, check_id
from statewf.errors import DuplicateInstance, InvalidInput, StatewfError
from statewf.fold import apply
from statewf.records import KIND_CREATE, Instance, TransitionRecord
from statewf.store.runs import load_run, runs_in_status

log = logging.getLogger("durable")
T = TypeVar("T")

WorkflowLike = Workflow[Any, Any] | Pipeline


class WorkflowEngine(RunInspection, WaitControl, RunOperations):
    """Runs durable workflows on a statewf database.

    Args:
        engine: a :class:`statewf.Engine`, or a database URL to make one
            (``sqlite:///file.db``, ``postgresql+psycopg://...``); None uses
            ``STATEWF_DATABASE_URL`` or ``sqlite:///statewf.db``.
        workflows: workflows (or pipelines) this engine can execute.
        clock: the time source (default: the statewf engine's clock); pass a
            :class:`statewf.testing.ManualClock` to drive retries and timeouts in tests.
        recover: on :meth:`start`, resume runs left in progress by a process that died.
            Until multi-process workers exist, let only one engine per database recover.
        scheduler: run the scheduler that wakes waiting runs (sleeps, events, polls)
            when they are due; several engines may share this work.
        poll_interval: longest real time, in seconds, between two looks for due runs.
        db_threads: threads for database work.
        seed: seed of the random jitter of retry delays (for reproducible tests).

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
    ) -> None:
        if isinstance(engine, Engine):
            self.engine = engine
            self._owns_engine = False
        else:
            self.engine = Engine(engine, schema=schema, table_prefix=table_prefix, clock=clock)
            self._owns_engine = True
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
            if self.recover:
                await self.recover_runs()
            if self.run_scheduler:
                self._start_scheduler()
            # only now: a start that failed half-way can be tried again
            self._started = True

    async def recover_runs(self) -> list[str]:
        """Resume every in-progress run of a registered workflow not already executing here."""
        names = sorted({name for name, _ in self._workflows})
        if not names:
            return []
        resumed: list[str] = []
        after: str | None = None
        while True:

            def page(after_id: str | None = after) -> list[Instance]:
                with self.engine.store.transaction() as tx:
                    return runs_in_status(
                        tx, RUN_KIND, sorted(IN_PROGRESS), machines=names, after_id=after_id
                    )

            found = await self.host.db(page)
            if not found:
                return resumed
            for snap in found:
                if snap.id in self._tasks:
                    continue
                if (snap.machine, snap.machine_version) not in self._workflows:
                    log.warning(
                        "not resuming run %s: workflow %s version %s is not registered",
                        snap.id,
                        snap.machine,
                        snap.machine_version,
                    )
                    continue
                try:
                    executor = await self._load_executor(snap.id, None)
                    if executor is None or executor.finished:
                        continue
                    if not await self._mark_recovered(executor, "engine start"):
                        continue
                except StatewfError as exc:  # e.g. finished or changed meanwhile: go on
                    log.warning("not resuming run %s: %s", snap.id, exc)
                    continue
                self._spawn(executor)
                resumed.append(snap.id)
            after = found[-1].id

    async def close(self) -> None:
        """Stop executing (runs stay in progress, resumed on the next start); free resources."""
        if self._closed:
            return
        self._closed = True
        await self._stop_scheduler()
        tasks = [*self._tasks.values(), *self._redrives]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._pool.shutdown(wait=True)
        if self._owns_engine:
            self.engine.close()

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
        record = self._create_record(
            wf, run_id or uuid.uuid4().hex, stored_input, resource_id, idempotency_key
        )
        snapshot = apply(None, record)
        created, existing = await self.host.db(self._insert, snapshot, record)
        if not created:
            assert existing is not None
            return run_of(existing)
        executor = RunExecutor(self.host, wf, snapshot, [record])
        self._spawn(executor)
        return run_of(snapshot)

    def _create_record(
        self,
        wf: Workflow[Any, Any],
        run_id: str,
        stored_input: Any,
        resource_id: str | None,
        idempotency_key: str | None,
    ) -> TransitionRecord:
        now = self.clock.now()
        context: dict[str, Any] = {
            "input": stored_input,
            "plan": wf.plan.to_json(),
            "completed_steps": 0,
        }
        if wf.timeout is not None:
            context["deadline"] = (now + timedelta(seconds=wf.timeout)).isoformat()
        return TransitionRecord(
            instance_id=run_id,
            seq=1,
            kind=KIND_CREATE,
            target=("start",),
            context_set=context,
            status=RUNNING,
            meta={
                "machine": wf.name,
                "machine_version": wf.version,
                "kind": RUN_KIND,
                "resource_id": resource_id,
                "idempotency_key": idempotency_key,
            },
            created_at=now,
        )

    def _insert(self, snapshot: Instance, record: TransitionRecord) -> tuple[bool, Instance | None]:
        key, resource = snapshot.idempotency_key, snapshot.resource_id
        with self.engine.store.transaction() as tx:
            if key is not None:
                existing = tx.find_by_idempotency_key(snapshot.machine, key)
                if existing is not None:
                    return False, self._same_owner(existing, key, resource)
            if tx.insert_instance(snapshot):
                tx.append([record])
                return True, None
        if key is not None:
            with self.engine.store.transaction() as tx:
                existing = tx.find_by_idempotency_key(snapshot.machine, key)
            if existing is not None:
                return False, self._same_owner(existing, key, resource)
        raise DuplicateInstance(
            f"a run or instance with id {snapshot.id!r} already exists; choose another "
            "run_id or omit it to get a generated one",
            instance_id=snapshot.id,
        )

    @staticmethod
    def _same_owner(existing: Instance, key: str, resource_id: str | None) -> Instance:
        if existing.resource_id != resource_id:
            raise InvalidInput(
                f"idempotency key {key!r} of workflow {existing.machine!r} is already used "
                "by a run of another resource; idempotency keys are unique per workflow",
                instance_id=existing.id,
            )
        return existing

    # ------------------------------------------------------------ executing runs

    def _workflow_names(self) -> list[str]:
        return sorted({name for name, _ in self._workflows})

    def _workflow_versions(self) -> list[tuple[str, str]]:
        return sorted(self._workflows)

    def _executor_for(
        self, snapshot: Instance, records: list[TransitionRecord]
    ) -> RunExecutor | None:
        wf = self._workflows.get((snapshot.machine, snapshot.machine_version))
        if wf is None:
            log.warning(
                "run %s of %s version %s is due but that version is not registered here",
                snapshot.id,
                snapshot.machine,
                snapshot.machine_version,
            )
            return None
        return RunExecutor(self.host, wf, snapshot, records)

    async def _run_snapshot(self, run_id: str, resource_id: str | None) -> Instance:
        return await self._snapshot(run_id, resource_id)

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
            raise
        except BaseException as exc:  # a crash: leave the run in progress, as a dead process would
            self._crashes[run_id] = exc
            log.error("run %s stopped unexpectedly and stays in progress: %r", run_id, exc)
        finally:
            self._tasks.pop(run_id, None)
            self._executors.pop(run_id, None)

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
                executor = await self._load_executor(run_id, None)
                if executor is None or executor.snapshot.status not in IN_PROGRESS:
                    return
                if await self._mark_recovered(executor, "after failed log writes"):
                    self._spawn(executor)
            except StatewfError as exc:  # the database is still away: later
                log.warning("run %s: cannot take it up again yet: %s", run_id, exc)
                self._redrive_later(run_id, attempt=attempt + 1)

        task = asyncio.get_running_loop().create_task(redrive(), name=f"durable-redrive-{run_id}")
        self._redrives.add(task)
        task.add_done_callback(self._redrives.discard)

    async def _load_executor(self, run_id: str, resource_id: str | None) -> RunExecutor | None:
        def load() -> tuple[Instance, list[TransitionRecord]] | None:
            with self.engine.store.transaction() as tx:
                return load_run(tx, run_id)

        loaded = await self.host.db(load)
        if loaded is None or not _visible(loaded[0], resource_id):
            raise _not_found(run_id, resource_id)
        snapshot, records = loaded
        if snapshot.kind != RUN_KIND:
            raise _not_found(run_id, resource_id)
        if snapshot.status in TERMINAL:
            return None
        wf = self._definition(snapshot.machine, snapshot.machine_version)
        return RunExecutor(self.host, wf, snapshot, records)

    async def _mark_recovered(self, executor: RunExecutor, reason: str) -> bool:
        """Record that this engine takes the run up again; False if it was stopped meanwhile.

        A run cancelled or paused between loading it and this write raises the
        engine's ``Stop`` signal inside the write: it must not escape to the caller.
        """
        try:
            await executor.write(
                lambda _tx, _snap: {
                    "kind": KIND_RECOVER,
                    "status": RUNNING,
                    "meta": {"reason": reason},
                }
            )
        except Stop:
            log.info(
                "run %s was stopped before it could be resumed (%s)", executor.snapshot.id, reason
            )
            return False
        return True

    async def resume(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Execute a run to its end (or its next wait) in the caller's task; the run after.

        For runs left ``running`` or ``pending`` (after a crash, or on purpose with
        ``scheduler=False``). A finished, waiting or paused run is returned as it is
        (waiting runs are woken by the scheduler, paused ones by
        :meth:`resume_workflow`); a run already executing in this engine is awaited.
        Recorded steps are replayed from the log, not run again.
        """
        await self.start()
        check_id(run_id, "run id")
        task = self._tasks.get(run_id)
        if task is not None:
            await self.get_run(run_id, resource_id=resource_id)  # scope check
            await asyncio.shield(task)
            return await self.get_run(run_id, resource_id=resource_id)
        executor = await self._load_executor(run_id, resource_id)
        if executor is not None and executor.snapshot.status in IN_PROGRESS:
            if not await self._mark_recovered(executor, "resume"):
                return await self.get_run(run_id, resource_id=resource_id)
            self._executors[run_id] = executor
            try:
                await executor.execute()
            finally:
                self._executors.pop(run_id, None)
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
