"""Creating a run: its first log row and its instance row, shared by engines and clients.

A run's create row holds its input and, when the creator has the workflow's code,
its step plan and deadline; a :class:`~durable.Client` without the code leaves
those to the claim row of the first worker that executes the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from durable.records import RUN_KIND, RUNNING
from statewf.clock import Clock
from statewf.engine import Engine, check_id
from statewf.errors import DuplicateInstance, InvalidInput
from statewf.fold import apply
from statewf.records import KIND_CREATE, Instance, TransitionRecord
from statewf.store import SqlStore
from statewf.store.leases import encode_labels
from statewf.store.runs import notify_wake

#: Bounds of a run's priority (higher runs first).
PRIORITY_RANGE = (-1_000_000, 1_000_000)


@dataclass(frozen=True)
class RunSpec:
    """What a run's create row needs to know of its workflow."""

    name: str
    version: str
    plan: dict[str, Any] | None = None
    timeout: float | None = None


def engine_of(
    engine: Engine | str | None, schema: str | None, table_prefix: str, clock: Clock | None
) -> tuple[Engine, bool]:
    """The statewf engine to use, and whether the caller made it (and so closes it)."""
    if isinstance(engine, Engine):
        return engine, False
    return Engine(engine, schema=schema, table_prefix=table_prefix, clock=clock), True


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
) -> TransitionRecord:
    """The create row of a new run."""
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
        status=RUNNING,
        meta={
            "machine": spec.name,
            "machine_version": spec.version,
            "kind": RUN_KIND,
            "resource_id": resource_id,
            "idempotency_key": idempotency_key,
        },
        created_at=now,
    )


def check_start_ids(run_id: str | None, resource_id: str | None, key: str | None) -> None:
    """Raise :class:`InvalidInput` for a malformed run id, resource id or idempotency key."""
    for value, what in ((run_id, "run id"), (resource_id, "resource_id"), (key, "idempotency_key")):
        if value is not None:
            check_id(value, what)


def new_run(
    spec: RunSpec,
    run_id: str,
    stored_input: Any,
    resource_id: str | None,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[TransitionRecord, Instance]:
    """The create row of a new run and the snapshot it implies."""
    record = create_record(spec, run_id, stored_input, resource_id, idempotency_key, now)
    return record, apply(None, record)


def insert_run(
    store: SqlStore,
    snapshot: Instance,
    record: TransitionRecord,
    columns: dict[str, Any],
    notify: bool = False,
) -> tuple[bool, Instance | None]:
    """Insert a new run; (True, None), or (False, the run) for a known idempotency key.

    ``columns`` are extra instance columns (route, lease). ``notify`` tells idle
    workers (PostgreSQL) that a run is waiting to be claimed.
    """
    key, resource = snapshot.idempotency_key, snapshot.resource_id
    with store.transaction() as tx:
        if key is not None:
            existing = tx.find_by_idempotency_key(snapshot.machine, key)
            if existing is not None:
                return False, _same_owner(existing, key, resource)
        if tx.insert_instance(snapshot, **columns):
            tx.append([record])
            if notify:
                notify_wake(store, tx, snapshot.id)
            return True, None
    if key is not None:
        with store.transaction() as tx:
            existing = tx.find_by_idempotency_key(snapshot.machine, key)
        if existing is not None:
            return False, _same_owner(existing, key, resource)
    raise DuplicateInstance(
        f"a run or instance with id {snapshot.id!r} already exists; choose another "
        "run_id or omit it to get a generated one",
        instance_id=snapshot.id,
    )


def _same_owner(existing: Instance, key: str, resource_id: str | None) -> Instance:
    if existing.resource_id != resource_id:
        raise InvalidInput(
            f"idempotency key {key!r} of workflow {existing.machine!r} is already used "
            "by a run of another resource; idempotency keys are unique per workflow",
            instance_id=existing.id,
        )
    return existing
