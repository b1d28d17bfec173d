"""Rows of a run's log: its create row, the columns that route it, a step's row. Pure.

A run's create row holds its input and, when the creator has the workflow's code,
its step plan and deadline; a :class:`~durable.Client` without the code leaves
those to the claim row of the first worker that executes the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from durable.log.records import KIND_STEP_FAILED, PAUSED, RUN_KIND, RUNNING
from statewf.engine import check_id
from statewf.errors import InvalidInput
from statewf.records import KIND_CREATE, Instance, TransitionRecord
from statewf.store.leases import encode_labels

#: Bounds of a run's priority (higher runs first).
PRIORITY_RANGE = (-1_000_000, 1_000_000)


@dataclass(frozen=True)
class RunSpec:
    """What a run's create row needs to know of its workflow."""

    name: str
    version: str
    plan: dict[str, Any] | None = None
    timeout: float | None = None


def route_columns(queue: str, priority: int, labels: Mapping[str, str] | None) -> dict[str, Any]:
    """The instance columns that route a run to workers, validated."""
    check_id(queue, "queue name")
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidInput(f"priority must be an integer from {low} to {high}, got {priority!r}")
    if labels is not None and not isinstance(labels, Mapping):
        raise InvalidInput(f"labels must be a mapping of names to values, got {labels!r}")
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or "=" in key:
            raise InvalidInput(f"label name {key!r} must be a string without '='")
        check_id(key, "label name")
        if not isinstance(value, str):
            raise InvalidInput(f"label {key!r} must have a string value, got {value!r}")
        check_id(value, "label value")
    return {"queue": queue, "priority": priority, "labels": encode_labels(labels)}


def create_record(
    spec: RunSpec,
    run_id: str,
    stored_input: Any,
    resource_id: str | None,
    idempotency_key: str | None,
    now: datetime,
    status: str = RUNNING,
) -> TransitionRecord:
    """The create row of a new run: ``running`` when its creator executes it at once,
    ``pending`` when it waits for a worker to claim it."""
    context: dict[str, Any] = {"input": stored_input, "completed_steps": 0}
    if spec.plan is not None:
        context["plan"] = spec.plan
    if spec.timeout is not None:
        context["deadline"] = (now + timedelta(seconds=spec.timeout)).isoformat()
    return TransitionRecord(
        instance_id=run_id,
        seq=1,
        kind=KIND_CREATE,
        target=("start",),
        context_set=context,
        status=status,
        meta={
            "machine": spec.name,
            "machine_version": spec.version,
            "kind": RUN_KIND,
            "resource_id": resource_id,
            "idempotency_key": idempotency_key,
        },
        created_at=now,
    )


def step_row(
    kind: str,
    key: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    snap: Instance,
    completed: bool,
    suspending: bool,
) -> dict[str, Any]:
    """The fields of a row recording a step's (or wait's) attempt or outcome on ``snap``.

    ``suspending``: the execution already wrote a suspension row (a sibling started
    waiting), so the run keeps its status.
    """
    fields: dict[str, Any] = {
        "kind": kind,
        "key": key,
        "payload": payload,
        "meta": meta,
        "status": RUNNING,
        "target": (key,),
    }
    if suspending or snap.status == PAUSED:
        # a parallel step finished after a sibling started waiting, or a step
        # finished after an operator paused the run: the run keeps its status
        fields["status"] = snap.status
        fields["wake_at"] = snap.wake_at
    if completed or kind == KIND_STEP_FAILED:
        fields["context_set"] = {"completed_steps": int(snap.context.get("completed_steps", 0)) + 1}
    return fields
