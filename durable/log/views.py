"""Reading runs for people and programs: run records, progress and timelines. Pure.

Everything here is computed from a run's snapshot or log alone, without the
workflow's code, so a CLI or an API service reports the same as the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from durable.errors import WorkflowFailed
from durable.log.plan import StepPlan
from durable.log.records import (
    CANCELLED,
    COMPLETED,
    DEAD,
    FAILED,
    KIND_RETRY,
    KIND_STEP,
    KIND_STEP_FAILED,
    RUN_STATUSES,
    TERMINAL,
    WAITING,
    HumanTask,
    Progress,
    RunError,
    StepAttempt,
    StepTimeline,
    WorkflowRun,
)
from statewf.errors import InvalidInput
from statewf.records import Instance, StepRow, TransitionRecord


def check_status_filter(status: str | Sequence[str] | None) -> None:
    """Raise :class:`InvalidInput` for a status filter naming no run status."""
    names = [status] if isinstance(status, str) else list(status or ())
    for name in names:
        if name not in RUN_STATUSES:
            raise InvalidInput(
                f"{name!r} is not a run status; use one of {', '.join(RUN_STATUSES)}"
            )


def run_of(snapshot: Instance) -> WorkflowRun:
    """The :class:`WorkflowRun` a run's snapshot describes."""
    ctx = snapshot.context
    error = ctx.get("error")
    deadline = ctx.get("deadline")
    last = snapshot.state if snapshot.state not in ("start", *TERMINAL) else None
    return WorkflowRun(
        id=snapshot.id,
        workflow=snapshot.machine,
        version=snapshot.machine_version,
        status=snapshot.status,
        input=ctx.get("input"),
        output=ctx.get("output"),
        error=RunError.model_validate(error) if isinstance(error, dict) else None,
        resource_id=snapshot.resource_id,
        idempotency_key=snapshot.idempotency_key,
        current_step=last,
        completed_steps=int(ctx.get("completed_steps", 0)),
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
        deadline=datetime.fromisoformat(deadline) if deadline else None,
        waiting=ctx.get("waiting"),
        wake_at=snapshot.wake_at,
    )


def progress_of(snapshot: Instance) -> Progress:
    """How far a run has got, with the total from the plan stored at its start."""
    run = run_of(snapshot)
    plan = StepPlan.from_json(snapshot.context.get("plan"))
    done = run.completed_steps
    total = plan.total_steps
    approximate = plan.approximate
    if total is not None and done > total:
        total, approximate = done, True
    if run.status == COMPLETED:
        percentage = 100.0
        total = done if total is None or approximate else total
    elif total:
        percentage = round(100.0 * done / total, 1)
    else:
        percentage = 0.0
    return Progress(
        run_id=run.id,
        status=run.status,
        completed_steps=done,
        total_steps=total,
        completion_percentage=percentage,
        approximate=approximate,
        current_step=run.current_step,
    )


def timeline_of(records: Iterable[TransitionRecord | StepRow]) -> list[StepTimeline]:
    """Each step of a run, in position order, with every recorded attempt."""
    attempts: dict[int, list[StepAttempt]] = {}
    keys: dict[int, str] = {}
    outcome: dict[int, TransitionRecord | StepRow] = {}
    for record in records:
        if record.kind not in (KIND_STEP, KIND_RETRY, KIND_STEP_FAILED):
            continue
        position = int(record.meta["position"])
        keys[position] = record.key or ""
        started = record.meta.get("started_at")
        payload: dict[str, Any] = record.payload if isinstance(record.payload, dict) else {}
        error = payload.get("error")
        retry_at = record.meta.get("retry_at")
        attempts.setdefault(position, []).append(
            StepAttempt(
                attempt=int(record.meta.get("attempt", 1)),
                started_at=datetime.fromisoformat(started) if started else None,
                ended_at=record.created_at,
                duration_ms=record.meta.get("duration_ms"),
                error=RunError.model_validate(error) if error else None,
                retry_at=datetime.fromisoformat(retry_at) if retry_at else None,
            )
        )
        if record.kind != KIND_RETRY:
            outcome[position] = record
    timeline = []
    for position in sorted(keys):
        final = outcome.get(position)
        if final is None:
            status, result, error = "retrying", None, None
        elif final.kind == KIND_STEP:
            status, result, error = "completed", (final.payload or {}).get("result"), None
        else:
            status, result = "failed", None
            error = RunError.model_validate(final.payload["error"])
        timeline.append(
            StepTimeline(
                key=keys[position],
                position=position,
                status=status,
                attempts=attempts[position],
                result=result,
                error=error,
                transactional=bool(final is not None and final.meta.get("transactional")),
            )
        )
    return timeline


def task_of(snapshot: Instance) -> HumanTask | None:
    """The open human task of a waiting run (from the wait stored in its snapshot), if any."""
    waiting = snapshot.context.get("waiting") or {}
    task = waiting.get("task")
    if snapshot.status != WAITING or waiting.get("kind") != "wait" or not isinstance(task, dict):
        return None
    timeout_at = waiting.get("timeout_at")
    return HumanTask(
        run_id=snapshot.id,
        workflow=snapshot.machine,
        key=str(waiting.get("key")),
        type=task.get("type", "approval"),
        prompt=task.get("prompt"),
        context=task.get("context"),
        assignee=task.get("assignee"),
        answer_schema=task.get("answer_json_schema"),
        resource_id=snapshot.resource_id,
        waiting_since=snapshot.updated_at,
        timeout_at=datetime.fromisoformat(timeout_at) if timeout_at else None,
    )


def output_of(run: WorkflowRun) -> Any:
    """A finished run's output; :class:`WorkflowFailed` if it failed, was cancelled or died."""
    if run.status in (FAILED, CANCELLED, DEAD):
        error = run.error
        raise WorkflowFailed(
            f"run {run.id!r} of workflow {run.workflow!r} {run.status}"
            + (f": {error.type}: {error.message}" if error else ""),
            instance_id=run.id,
            status=run.status,
            error_type=error.type if error else None,
            error_message=error.message if error else None,
        )
    return run.output
