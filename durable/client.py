"""The client side of durable workflows: start, signal, steer, inspect and repair runs.

A :class:`Client` owns every operation on runs and executes nothing: it appends log
rows (each one transaction, :mod:`durable.control.actions`, :mod:`durable.control.repair`) and
reads runs; whoever has the code (a :class:`~durable.Worker`, or a
:class:`~durable.WorkflowEngine`, which has a client of its own) executes them. An
API service creates one on the same database as its workers; it imports no
workflow code::

    client = durable.Client("postgresql+psycopg://...")
    run = await client.start_workflow(onboard, {"email": "a@example.com"})
    await client.trigger_event(run.id, "user-confirmed", {"at": "..."})
    print(await client.check_progress(run.id))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from durable.authoring.refs import Served, WorkflowRef
from durable.authoring.waits import Approval, TaskAnswer
from durable.authoring.workflow import Workflow
from durable.control import actions as control
from durable.control import repair as operations
from durable.control import versions
from durable.control.start import check_start_ids, engine_of, insert_run, new_run
from durable.log.export import RunHistory
from durable.log.records import (
    DEAD,
    FAILED,
    PENDING,
    RUN_KIND,
    HumanTask,
    Progress,
    StepTimeline,
    WorkflowRun,
)
from durable.log.rows import RunSpec, route_columns
from durable.log.views import (
    check_status_filter,
    output_of,
    progress_of,
    run_of,
    task_of,
    timeline_of,
)
from statewf.clock import Clock
from statewf.engine import Engine, check_event_name, check_id
from statewf.errors import InvalidInput, InvalidPayload
from statewf.records import Instance, Page
from statewf.store import DatabaseEngine

T = TypeVar("T")


class Client:
    """Starts, steers, inspects and repairs runs; executes none and holds no workflow code.

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
        engine: Engine | DatabaseEngine | str | None = None,
        *,
        schema: str | None = None,
        table_prefix: str = "statewf_",
        clock: Clock | None = None,
        db_threads: int = 4,
    ) -> None:
        self.engine, self._owns_engine = engine_of(engine, schema, table_prefix, clock)
        self.clock: Clock = clock or self.engine.clock
        self._pool = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="durable-client")
        self._closed = False

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in the client's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

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

    # ------------------------------------------------------------ starting and stopping

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
        """Create a run for a worker to execute; the new run, ``pending`` until a worker claims it.

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
        check_start_ids(run_id, resource_id, idempotency_key)
        route = route_columns(
            queue if queue is not None else workflow.queue,
            priority if priority is not None else workflow.priority,
            labels if labels is not None else workflow.labels,
        )
        stored = workflow.validate_input(input, max_bytes=self.engine.max_payload_bytes)
        spec = RunSpec(workflow.name, version or workflow.version)
        record, snapshot = new_run(
            spec,
            run_id or uuid.uuid4().hex,
            stored,
            resource_id,
            idempotency_key,
            self.clock.now(),
            PENDING,
        )
        created, existing, _ = await self._db(
            insert_run, self.engine.store, snapshot, record, route, True
        )
        if not created:
            assert existing is not None
            return run_of(existing)
        return run_of(snapshot)

    async def cancel_workflow(
        self, run_id: str, *, resource_id: str | None = None, reason: str | None = None
    ) -> WorkflowRun:
        """Cancel a run: a ``cancel`` row; whoever executes it stops at its next step.

        Raises :class:`RunFinished` for a finished run.
        """
        check_id(run_id, "run id")
        snapshot = await self._db(
            control.cancel, self.engine.store, run_id, resource_id, reason, self.clock.now()
        )
        return run_of(snapshot)

    # ------------------------------------------------------------ events and waits

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
        made due; otherwise the event is kept for the next ``wait_for`` of that name.
        Data that does not match the waiting step's ``schema`` raises
        :class:`~statewf.errors.InvalidPayload` and records nothing. Events to a
        finished run raise :class:`~durable.RunFinished`.
        """
        check_id(run_id, "run id")
        check_event_name(event)
        snap = await self._db(
            control.trigger,
            self.engine.store,
            run_id,
            resource_id,
            event,
            data,
            self.clock.now(),
            self.engine.max_payload_bytes,
            by,
        )
        return run_of(snap)

    async def pause_workflow(
        self, run_id: str, *, resource_id: str | None = None, by: str | None = None
    ) -> WorkflowRun:
        """Pause a run: it stops at its next step boundary until :meth:`resume_workflow`."""
        check_id(run_id, "run id")
        snap = await self._db(
            control.pause, self.engine.store, run_id, resource_id, self.clock.now(), by
        )
        return run_of(snap)

    async def resume_workflow(
        self, run_id: str, *, resource_id: str | None = None, by: str | None = None
    ) -> WorkflowRun:
        """Resume a paused run (paused from outside or by ``ctx.step.pause``)."""
        check_id(run_id, "run id")
        snap = await self._db(
            control.resume, self.engine.store, run_id, resource_id, self.clock.now(), by
        )
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
        snap, event = await self._db(
            control.fast_forward,
            self.engine.store,
            run_id,
            resource_id,
            data,
            self.clock.now(),
            by,
        )
        if event is not None:
            return await self.trigger_event(
                run_id, event, {} if data is None else data, resource_id=resource_id, by=by
            )
        if snap.status == "paused":
            return await self.resume_workflow(run_id, resource_id=resource_id, by=by)
        return run_of(snap)

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
        """Approve the run's pending ``ctx.step.approval`` (or the one named ``step``).

        ``answer`` is the reviewer's answer; an approval with a ``schema`` needs one
        that fits it (``InvalidPayload`` otherwise, and nothing is recorded).
        """
        return await self._decide(run_id, True, reviewer, comment, step, resource_id, answer)

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
        answer: Any = None,
    ) -> WorkflowRun:
        if not isinstance(reviewer, str) or not reviewer:
            raise InvalidInput("reviewer must be a non-empty string (who decided)")
        waiting = await self._waiting_task(run_id, "approval", step, resource_id)
        if step is None:
            step = str(waiting.get("key"))
        task = waiting.get("task") or {}
        if approved and answer is None and task.get("answer_schema") and waiting.get("key") == step:
            raise InvalidPayload(
                f"approval {step!r} of run {run_id!r} asks for an answer fitting "
                f"{task['answer_schema'].rpartition(':')[2]}; pass answer= "
                "(statewf tasks approve ... --answer JSON); nothing was recorded",
                instance_id=run_id,
            )
        decision = Approval(approved=approved, reviewer=reviewer, reason=reason, answer=answer)
        return await self.trigger_event(
            run_id, f"approval:{step}", decision.model_dump(mode="json"), resource_id=resource_id
        )

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
        """Complete the run's pending ``ctx.step.human_task`` (or the one named ``step``)
        with ``data``, checked against the task's schema (``InvalidPayload`` if it does not fit).
        """
        if not isinstance(reviewer, str) or not reviewer:
            raise InvalidInput("reviewer must be a non-empty string (who completed the task)")
        waiting = await self._waiting_task(run_id, "task", step, resource_id)
        key = step if step is not None else str(waiting.get("key"))
        answer = TaskAnswer(data=data, reviewer=reviewer, comment=comment)
        return await self.trigger_event(
            run_id, f"task:{key}", answer.model_dump(mode="json"), resource_id=resource_id
        )

    async def _waiting_task(
        self, run_id: str, kind: str, step: str | None, resource_id: str | None
    ) -> dict[str, Any]:
        """The wait of the run's open task of ``kind`` (``{}`` when ``step`` names one ahead)."""
        run = await self._load(run_id, resource_id)
        waiting = run.context.get("waiting") or {}
        event = str(waiting.get("event", ""))
        what = "an approval" if kind == "approval" else "a human task"
        if step is not None:
            return waiting if event == f"{kind}:{step}" else {}
        if not event.startswith(f"{kind}:"):
            raise InvalidInput(
                f"run {run_id!r} is not waiting for {what}; name the step= to record it in advance",
                instance_id=run_id,
            )
        due = run.wake_at is not None and run.wake_at <= self.clock.now()
        if run.status != "waiting" or due:
            raise InvalidInput(
                f"run {run_id!r} is not waiting for {what} right now (an answer for "
                f"{event.removeprefix(kind + ':')!r} may be queued already); try again "
                "when it waits, or name the step= to answer in advance",
                instance_id=run_id,
            )
        return waiting

    async def tasks(
        self,
        *,
        assignee: str | None = None,
        resource_id: str | None = None,
        workflow: str | None = None,
    ) -> list[HumanTask]:
        """The open human tasks (approvals and ``human_task`` waits), oldest first.

        ``assignee`` keeps the tasks assigned to that person; ``resource_id`` and
        ``workflow`` keep those of one resource or workflow.
        """

        def scan() -> list[HumanTask]:
            found: list[HumanTask] = []
            cursor: str | None = None
            while True:
                page = self.engine.list(
                    machine=workflow,
                    status="waiting",
                    resource_id=resource_id,
                    kind=RUN_KIND,
                    limit=500,
                    cursor=cursor,
                )
                for snapshot in page.items:
                    task = task_of(snapshot)
                    if task is not None and (assignee is None or task.assignee == assignee):
                        found.append(task)
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

        return await self._db(scan)

    async def get_task(self, run_id: str, *, resource_id: str | None = None) -> HumanTask:
        """The open human task of run ``run_id`` (``InvalidInput`` if it waits for none)."""
        task = task_of(await self._load(run_id, resource_id))
        if task is None:
            raise InvalidInput(
                f"run {run_id!r} is not waiting for an approval or a human task; "
                "statewf tasks list shows the open ones",
                instance_id=run_id,
            )
        return task

    # ------------------------------------------------------------ reading

    async def _load(self, run_id: str, resource_id: str | None) -> Instance:
        check_id(run_id, "run id")
        return await self._db(lambda: self._read(control.load_run, run_id, resource_id, lock=False))

    async def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """A run: status, input, output or error, timestamps.

        Raises :class:`RunNotFound` for an unknown id or a run of another resource.
        """
        return run_of(await self._load(run_id, resource_id))

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
        check_status_filter(status)

        def page() -> Page[Instance]:
            return self.engine.list(
                machine=workflow,
                status=status,
                resource_id=resource_id,
                kind=RUN_KIND,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )

        found = await self._db(page)
        return Page[WorkflowRun](
            items=[run_of(i) for i in found.items], next_cursor=found.next_cursor
        )

    async def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        """Completed and total steps of a run (total from the workflow's source, stored)."""
        return progress_of(await self._load(run_id, resource_id))

    async def get_timeline(
        self, run_id: str, *, resource_id: str | None = None
    ) -> list[StepTimeline]:
        """Each step of a run with its attempts, durations, result or error."""
        await self._load(run_id, resource_id)
        records = await self._db(self.engine.history, run_id)
        return timeline_of(records)

    async def wait_for_run(
        self,
        run_id: str,
        *,
        resource_id: str | None = None,
        timeout: float | None = None,
        poll_interval: float = 0.05,
    ) -> WorkflowRun:
        """Wait until a run is completed, failed or cancelled; the run.

        Raises ``TimeoutError`` after ``timeout`` real seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                run = await self.get_run(run_id, resource_id=resource_id)
                if run.finished:
                    return run
                await asyncio.sleep(poll_interval)

    async def result(
        self, run_id: str, *, resource_id: str | None = None, timeout: float | None = None
    ) -> Any:
        """Wait for a run and return its output; :class:`WorkflowFailed` if it did not complete."""
        run = await self.wait_for_run(run_id, resource_id=resource_id, timeout=timeout)
        return output_of(run)

    # ------------------------------------------------------------ repairing

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
        statuses = [DEAD, FAILED] if include_failed else [DEAD]
        found = await self._db(
            operations.list_runs, self.engine.store, statuses, workflow, resource_id, limit, cursor
        )
        return Page[WorkflowRun](
            items=[run_of(i) for i in found.items], next_cursor=found.next_cursor
        )

    async def retry_run(
        self, run_id: str, *, reason: str | None = None, resource_id: str | None = None
    ) -> WorkflowRun:
        """Make a failed or dead run go on from its failed step; earlier steps are replayed."""
        check_id(run_id, "run id")
        now = self.clock.now()
        snap = await self._db(operations.retry, self.engine.store, run_id, resource_id, reason, now)
        return run_of(snap)

    async def discard_run(
        self, run_id: str, *, reason: str, resource_id: str | None = None
    ) -> WorkflowRun:
        """Give up a failed or dead run: it is ``cancelled``, with ``reason`` in the log."""
        check_id(run_id, "run id")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput(f"discarding run {run_id!r} needs a reason (a non-empty string)")
        now = self.clock.now()
        snap = await self._db(
            operations.discard, self.engine.store, run_id, resource_id, reason, now
        )
        return run_of(snap)

    async def fork_run(
        self,
        run_id: str,
        *,
        from_step: str,
        new_run_id: str | None = None,
        resource_id: str | None = None,
    ) -> WorkflowRun:
        """A new run of the same workflow and input that replays the steps before ``from_step``."""
        check_id(run_id, "run id")
        new_id = check_id(new_run_id, "new run id") if new_run_id is not None else None
        snap = await self._db(
            operations.fork,
            self.engine.store,
            run_id,
            resource_id,
            from_step,
            new_id or uuid.uuid4().hex,
            self.clock.now(),
        )
        return run_of(snap)

    # ------------------------------------------------------------ code versions

    async def export_history(self, run_id: str, *, resource_id: str | None = None) -> RunHistory:
        """A run's whole log, to write as JSON and replay with :func:`durable.testing.replay`."""
        check_id(run_id, "run id")
        return await self._db(self._read, versions.export_run, run_id, resource_id)

    async def on_old_branch(self, patch_id: str) -> list[WorkflowRun]:
        """Runs whose log records the old branch of ``ctx.patched(patch_id)``, oldest first."""
        found = await self._db(self._read, versions.on_old_branch, patch_id)
        return [run_of(s) for s in found]

    async def unserved_runs(
        self, served: Iterable[Served] | None = None, *, limit: int = 100, within: float = 120.0
    ) -> list[WorkflowRun]:
        """Unfinished runs of versions not in ``served`` (workflows, or (name, version)
        pairs; default: what the workers that heart-beat in the last ``within`` s serve)."""
        pairs = (
            None
            if served is None
            else {w if isinstance(w, tuple) else (w.name, w.version) for w in served}
        )
        found = await self._db(self._read, versions.unserved_runs, pairs, limit, within)
        return [run_of(s) for s in found]

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.store.transaction(readonly=True) as tx:
            return fn(tx, *args, **kwargs)
