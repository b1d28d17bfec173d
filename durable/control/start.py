"""Starting a run: its create row and instance row in one transaction (engines and clients).

The rows themselves are built by :mod:`durable.log.rows`; this module checks the
ids, inserts them, and answers a second start with a known idempotency key with
the first run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from durable.log.records import RUNNING
from durable.log.rows import RunSpec, create_record
from statewf.appending import Move, append
from statewf.clock import Clock
from statewf.engine import Engine, check_id
from statewf.errors import DuplicateInstance, InvalidInput
from statewf.fold import apply
from statewf.records import Instance, TransitionRecord
from statewf.store import DatabaseEngine, SqlStore, browse
from statewf.store.leases import db_now
from statewf.store.runs import notify_wake


def engine_of(
    engine: Engine | DatabaseEngine | str | None,
    schema: str | None,
    table_prefix: str,
    clock: Clock | None,
) -> tuple[Engine, bool]:
    """The statewf engine to use, and whether the caller made it (and so closes it)."""
    if isinstance(engine, Engine):
        return engine, False
    return Engine(engine, schema=schema, table_prefix=table_prefix, clock=clock), True


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
    status: str = RUNNING,
) -> tuple[TransitionRecord, Instance]:
    """The create row of a new run and the snapshot it implies."""
    record = create_record(spec, run_id, stored_input, resource_id, idempotency_key, now, status)
    return record, apply(None, record)


def insert_run(
    store: SqlStore,
    snapshot: Instance,
    record: TransitionRecord,
    columns: dict[str, Any],
    notify: bool = False,
    lease_for: timedelta | None = None,
) -> tuple[bool, Instance | None, datetime | None]:
    """Insert a new run: (True, None, lease expiry), or (False, the run, None) for a known key.

    ``columns`` are extra instance columns (route, lease owner). ``lease_for``: the
    run is inserted leased until that long from now on the database's clock.
    ``notify`` tells idle workers (PostgreSQL) that a run is waiting to be claimed.
    """
    key, resource = snapshot.idempotency_key, snapshot.resource_id
    with store.transaction() as tx:
        if key is not None:
            existing = tx.find_by_idempotency_key(snapshot.machine, key)
            if existing is not None:
                return False, _same_owner(existing, key, resource), None
        until = db_now(tx) + lease_for if lease_for is not None else None
        extra = {**columns, "lease_expires_at": until} if until is not None else columns
        if append(tx, [record], Move(snapshot, None, extra)):
            if notify:
                notify_wake(store, tx, snapshot.id)
            return True, None, until
    if key is not None:
        with store.transaction() as tx:
            existing = tx.find_by_idempotency_key(snapshot.machine, key)
        if existing is not None:
            return False, _same_owner(existing, key, resource), None
    raise DuplicateInstance(
        f"a run or instance with id {snapshot.id!r} already exists; choose another "
        "run_id or omit it to get a generated one",
        instance_id=snapshot.id,
    )


def committed_start(store: SqlStore, run_id: str, columns: dict[str, Any]) -> datetime | None:
    """After a start whose connection was lost under it: the lease expiry if the run's
    row is there, leased as that start leased it (owner and epoch), so it committed;
    None if it is not (the start may be made again). Store errors raise."""
    with store.transaction(readonly=True) as tx:
        found = browse.routes_of(tx, [run_id]).get(run_id)
    if found is None:
        return None
    ours = (found["lease_owner"], found["lease_epoch"]) == (
        columns.get("lease_owner"),
        columns.get("lease_epoch"),
    )
    expires: datetime | None = found["lease_expires_at"]
    return expires if ours and found["lease_owner"] is not None else None


def _same_owner(existing: Instance, key: str, resource_id: str | None) -> Instance:
    if existing.resource_id != resource_id:
        raise InvalidInput(
            f"idempotency key {key!r} of workflow {existing.machine!r} is already used "
            "by a run of another resource; idempotency keys are unique per workflow",
            instance_id=existing.id,
        )
    return existing
