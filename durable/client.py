"""The client side of durable workflows: start, signal, steer and inspect runs without their code.

An API service creates a :class:`Client` on the same database as its workers. It
starts runs by :func:`~durable.ref` (input validated before anything is written),
sends events, pauses, resumes, cancels, retries and reads runs; workers
(:class:`~durable.Worker`) execute them. A client never executes workflow code and
imports none::

    client = durable.Client("postgresql+psycopg://...")
    run = await client.start_workflow(onboard, {"email": "a@example.com"})
    await client.trigger_event(run.id, "user-confirmed", {"at": "..."})
    print(await client.check_progress(run.id))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from durable import control
from durable.definition import Workflow
from durable.inspection import RunInspection
from durable.operations import RunOperations
from durable.records import WorkflowRun
from durable.refs import WorkflowRef
from durable.report import run_of
from durable.scheduling import WaitControl
from durable.starting import RunSpec, create_record, engine_of, insert_run, route_columns
from durable.writer import RunHost
from statewf.clock import Clock
from statewf.engine import Engine, check_id
from statewf.errors import InvalidInput
from statewf.fold import apply


class Client(RunInspection, WaitControl, RunOperations):
    """Starts and steers runs that workers execute; holds no workflow code.

    Args:
        engine: a :class:`statewf.Engine` or a database URL (None:
            ``STATEWF_DATABASE_URL`` or ``sqlite:///statewf.db``).
        schema, table_prefix: where the statewf tables are (as for the workers).
        clock: the time source for row times (default: the system clock).
        db_threads: threads for database work.

    Use it as ``async with durable.Client(url) as client: ...`` or call :meth:`close`.
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        schema: str | None = None,
        table_prefix: str = "statewf_",
        clock: Clock | None = None,
        db_threads: int = 4,
    ) -> None:
        self.engine, self._owns_engine = engine_of(engine, schema, table_prefix, clock)
        self.clock: Clock = clock or self.engine.clock
        self._pool = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="durable-client")
        self.host = RunHost(
            store=self.engine.store,
            clock=self.clock,
            max_bytes=self.engine.max_payload_bytes,
            rand=lambda: 0.5,
            executor=self._pool,
        )
        self.poll_interval = 1.0
        self._scheduler = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._executors = {}
        self._crashes: dict[str, BaseException] = {}
        self._closed = False

    async def close(self) -> None:
        """Free the client's threads and (if it made it) its database engine."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        if self._owns_engine:
            self.engine.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start_workflow(
        self,
        workflow: WorkflowRef[Any] | Workflow[Any, Any] | str,
        input: Any = None,
        *,
        version: str | None = None,
        run_id: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> WorkflowRun:
        """Create a run for a worker to execute; the new run (``running``, not yet claimed).

        Args:
            workflow: a :func:`~durable.ref` (its input type validates ``input``), a
                workflow, or a bare name (input then goes unvalidated; ``version``
                defaults to ``"1"``).
            input: the run's input. Invalid input raises
                :class:`~statewf.errors.InvalidInput` and creates nothing.
            run_id, resource_id, idempotency_key: as for
                :meth:`WorkflowEngine.start_workflow`.
            queue, priority, labels: override the ref's routing for this run.
        """
        if self._closed:
            raise InvalidInput("this Client is closed; create a new one")
        if isinstance(workflow, str):
            workflow = WorkflowRef(workflow, version=version or "1")
        elif isinstance(workflow, Workflow):
            wf = workflow
            workflow = WorkflowRef(wf.name, input=wf.input_type, version=wf.version, queue=wf.queue)
        elif not isinstance(workflow, WorkflowRef):
            raise InvalidInput(
                f"start_workflow() takes a durable.ref(...), a workflow or a name, got {workflow!r}"
            )
        for value, what in (
            (run_id, "run id"),
            (resource_id, "resource_id"),
            (idempotency_key, "idempotency_key"),
        ):
            if value is not None:
                check_id(value, what)
        route = route_columns(
            queue if queue is not None else workflow.queue,
            priority if priority is not None else workflow.priority,
            labels if labels is not None else workflow.labels,
        )
        stored = workflow.validate_input(input, max_bytes=self.engine.max_payload_bytes)
        spec = RunSpec(workflow.name, version or workflow.version)
        record = create_record(
            spec,
            run_id or uuid.uuid4().hex,
            stored,
            resource_id,
            idempotency_key,
            self.clock.now(),
        )
        snapshot = apply(None, record)
        created, existing, _ = await self.host.db(
            insert_run, self.engine.store, snapshot, record, route, True
        )
        if not created:
            assert existing is not None
            return run_of(existing)
        return run_of(snapshot)

    async def cancel_workflow(
        self, run_id: str, *, resource_id: str | None = None, reason: str | None = None
    ) -> WorkflowRun:
        """Cancel a run: a ``cancel`` row; the worker executing it stops at its next step."""
        check_id(run_id, "run id")
        snapshot = await self.host.db(
            control.cancel, self.engine.store, run_id, resource_id, reason, self.clock.now()
        )
        return run_of(snapshot)
