"""Reading runs: get_run, get_runs, check_progress, get_timeline, wait_for_run, result.

Mixed into :class:`~durable.engine.WorkflowEngine`; nothing here writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import statewf
from durable import control
from durable.errors import WorkflowFailed
from durable.records import (
    CANCELLED,
    DEAD,
    FAILED,
    RUN_KIND,
    Progress,
    StepTimeline,
    WorkflowRun,
)
from durable.report import progress_of, run_of, timeline_of
from durable.writer import RunHost
from statewf.engine import check_id
from statewf.records import Instance, Page


class RunInspection:
    """The read side of a workflow engine (a mixin)."""

    engine: statewf.Engine
    host: RunHost
    _tasks: dict[str, asyncio.Task[None]]
    _crashes: dict[str, BaseException]

    async def _snapshot(self, run_id: str, resource_id: str | None) -> Instance:
        check_id(run_id, "run id")

        def get() -> Instance | None:
            with self.engine.store.transaction() as tx:
                return tx.get_instance(run_id)

        snap = await self.host.db(get)
        if snap is None or snap.kind != RUN_KIND or not _visible(snap, resource_id):
            raise _not_found(run_id, resource_id)
        return snap

    async def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """A run: status, input, output or error, timestamps.

        Raises :class:`RunNotFound` for an unknown id or a run of another resource.
        """
        return run_of(await self._snapshot(run_id, resource_id))

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

        found = await self.host.db(page)
        return Page[WorkflowRun](
            items=[run_of(i) for i in found.items], next_cursor=found.next_cursor
        )

    async def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        """Completed and total steps of a run (total from the workflow's source, stored)."""
        return progress_of(await self._snapshot(run_id, resource_id))

    async def get_timeline(
        self, run_id: str, *, resource_id: str | None = None
    ) -> list[StepTimeline]:
        """Each step of a run with its attempts, durations, result or error."""
        await self._snapshot(run_id, resource_id)
        records = await self.host.db(self.engine.history, run_id)
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

        If the run's execution in this engine stopped unexpectedly (a crash), that
        exception is raised. Raises ``TimeoutError`` after ``timeout`` real seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                task = self._tasks.get(run_id)
                if task is not None:
                    await asyncio.wait({task})
                crash = self._crashes.pop(run_id, None)
                if crash is not None:
                    raise crash
                run = await self.get_run(run_id, resource_id=resource_id)
                if run.finished:
                    return run
                if run_id not in self._tasks:
                    await asyncio.sleep(poll_interval)

    async def result(
        self, run_id: str, *, resource_id: str | None = None, timeout: float | None = None
    ) -> Any:
        """Wait for a run and return its output; :class:`WorkflowFailed` if it did not complete."""
        run = await self.wait_for_run(run_id, resource_id=resource_id, timeout=timeout)
        if run.status in (FAILED, CANCELLED, DEAD):
            error = run.error
            raise WorkflowFailed(
                f"run {run_id!r} of workflow {run.workflow!r} {run.status}"
                + (f": {error.type}: {error.message}" if error else ""),
                instance_id=run_id,
                status=run.status,
                error_type=error.type if error else None,
                error_message=error.message if error else None,
            )
        return run.output


def _visible(snapshot: Instance, resource_id: str | None) -> bool:
    return resource_id is None or snapshot.resource_id == resource_id


_not_found = control.not_found
