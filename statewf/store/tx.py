"""One open database transaction and the queries statewf runs in it (:class:`Tx`).

``Tx`` is the only code that knows which query to run; the engine decides *what* to
write, ``Tx`` knows *how*. :class:`~statewf.store.sql.SqlStore` hands one out per
database transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from statewf.errors import ConcurrencyConflict, InvalidInput
from statewf.records import Instance, TransitionRecord
from statewf.store import cursors, logread, logrows, prebuilt
from statewf.store.effects import OutboxQueries, version_filter
from statewf.store.schema import Tables, UTCDateTime

MAX_PAGE = 1000

INSTANCE_FIELDS = (
    "id",
    "machine",
    "machine_version",
    "kind",
    "state",
    "configuration",
    "context",
    "status",
    "version",
    "resource_id",
    "idempotency_key",
    "wake_at",
    "created_at",
    "updated_at",
)
_MUTABLE_FIELDS = prebuilt.MUTABLE_FIELDS
_RECORD_FIELDS = logrows.RECORD_FIELDS


def instance_from_row(row: Row[Any]) -> Instance:
    """Build an :class:`Instance` from an instances-table row."""
    m = row._mapping
    return Instance(**{f: m[f] for f in INSTANCE_FIELDS})


def record_from_row(row: Row[Any]) -> TransitionRecord:
    """Build a :class:`TransitionRecord` from a transitions-table row."""
    m = row._mapping
    return TransitionRecord(**{f: m[f] for f in _RECORD_FIELDS})


def _instance_values(snapshot: Instance) -> dict[str, Any]:
    values = snapshot.model_dump(include=set(INSTANCE_FIELDS))
    values["configuration"] = snapshot.stored_configuration()
    return values


def _record_values(record: TransitionRecord) -> dict[str, Any]:
    values = record.model_dump(include=set(_RECORD_FIELDS))
    values["source"] = list(record.source)
    values["target"] = list(record.target)
    values["context_unset"] = list(record.context_unset)
    return values


def _owner_filter(
    c: Any, versions: Sequence[tuple[str, str]] | None, machines: Sequence[str] | None
) -> Any:
    """Rows of these (machine, version) pairs, or of these machine names."""
    if versions is not None:
        return version_filter(c, versions)
    return c.machine.in_(list(machines or ()))


encode_cursor, decode_cursor = cursors.encode_cursor, cursors.decode_cursor


class Tx(OutboxQueries):
    """One open database transaction and the queries statewf runs in it."""

    def __init__(self, conn: Connection, tables: Tables) -> None:
        self.conn = conn
        self.t = tables

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.conn.dialect.name

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an error inside rolls back only what it wrote."""
        with self.conn.begin_nested():
            yield

    # ------------------------------------------------------------ instances

    def get_instance(self, instance_id: str, *, lock: bool = False) -> Instance | None:
        """The snapshot row, locked FOR UPDATE when ``lock`` (PostgreSQL)."""
        built = prebuilt.statements(self.t)
        query = built.get_instance_locked if lock else built.get_instance
        row = self.conn.execute(query, {"id": instance_id}).first()
        return instance_from_row(row) if row is not None else None

    def find_by_idempotency_key(self, machine: str, key: str) -> Instance | None:
        """The instance of ``machine`` created with idempotency ``key``, if any."""
        c = self.t.instances.c
        row = self.conn.execute(
            select(self.t.instances).where(c.machine == machine, c.idempotency_key == key)
        ).first()
        return instance_from_row(row) if row is not None else None

    def insert_instance(self, snapshot: Instance, **extra: Any) -> bool:
        """Insert a new snapshot row; False (and nothing written) if the id or key exists."""
        values = {**_instance_values(snapshot), **extra}
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        query = insert(self.t.instances).values(values).on_conflict_do_nothing()
        return self.conn.execute(query.returning(self.t.instances.c.id)).first() is not None

    def update_instance(self, snapshot: Instance, expected_version: int, **extra: Any) -> None:
        """Replace the snapshot row, only if it is still at ``expected_version``."""
        c = self.t.instances.c
        values = _instance_values(snapshot)
        for fixed in ("id", "machine", "kind", "created_at", "idempotency_key", "resource_id"):
            values.pop(fixed)
        if extra:  # a lease or a route besides the snapshot: built for these columns
            values.update(extra)
            result = self.conn.execute(
                update(self.t.instances)
                .where(c.id == snapshot.id, c.version == expected_version)
                .values(values)
            )
        else:
            values["w_id"] = snapshot.id
            values["w_expected_version"] = expected_version
            result = self.conn.execute(prebuilt.statements(self.t).update_instance, values)
        if result.rowcount != 1:
            raise ConcurrencyConflict(
                f"instance {snapshot.id!r} changed while this transition was being "
                f"decided (expected version {expected_version}); retry the operation",
                instance_id=snapshot.id,
            )

    def claim_due(
        self,
        now: datetime,
        *,
        kind: str,
        limit: int,
        versions: Sequence[tuple[str, str]] | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[Instance]:
        """Lock instances whose wake-up time has come, earliest first, skipping locked ones.

        On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several schedulers share the
        work without waiting on each other; on SQLite the write lock serializes them.
        Only instances of the given (machine, version) pairs, or machine names, count.
        """
        c = self.t.instances.c
        query = (
            select(self.t.instances)
            .where(c.wake_at <= now, c.kind == kind, _owner_filter(c, versions, machines))
            .order_by(c.wake_at, c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [instance_from_row(r) for r in self.conn.execute(query)]

    def next_wake_at(
        self,
        *,
        kind: str,
        versions: Sequence[tuple[str, str]] | None = None,
        machines: Sequence[str] | None = None,
    ) -> datetime | None:
        """The earliest pending wake-up time among these machines' instances."""
        c = self.t.instances.c
        query = select(func.min(c.wake_at)).where(
            c.wake_at.is_not(None), c.kind == kind, _owner_filter(c, versions, machines)
        )
        value = self.conn.execute(query).scalar()
        return UTCDateTime().process_result_value(value, self.conn.dialect)

    def list_instances(
        self,
        *,
        machine: str | None = None,
        state: str | None = None,
        status: str | Sequence[str] | None = None,
        resource_id: str | None = None,
        kind: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Instance], str | None]:
        """One page of snapshots, oldest first, and the cursor of the next page."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE} (an int), got {limit!r}")
        statuses = [status] if isinstance(status, str) else status
        if statuses is not None and not isinstance(statuses, Sequence):
            raise InvalidInput(f"list filter status must be a string or strings, got {status!r}")
        filters = [
            ("machine", machine),
            ("state", state),
            ("resource_id", resource_id),
            ("kind", kind),
            *(("status", s) for s in statuses or ()),
        ]
        for name, text in filters:
            if text is not None and not isinstance(text, str):
                raise InvalidInput(f"list filter {name} must be a string, got {text!r}")
            if text is not None and "\x00" in text:
                raise InvalidInput(f"list filter {name}={text[:60]!r} contains a NUL character")
        for name, when in (("created_after", created_after), ("created_before", created_before)):
            if when is not None and (not isinstance(when, datetime) or when.tzinfo is None):
                raise InvalidInput(f"{name} must be a timezone-aware datetime, got {when!r}")
        c = self.t.instances.c
        query = select(self.t.instances)
        if machine is not None:
            query = query.where(c.machine == machine)
        if state is not None:
            query = query.where(c.state == state)
        if isinstance(status, str):
            query = query.where(c.status == status)
        elif status is not None:
            query = query.where(c.status.in_(list(status)))
        if resource_id is not None:
            query = query.where(c.resource_id == resource_id)
        if kind is not None:
            query = query.where(c.kind == kind)
        if created_after is not None:
            query = query.where(c.created_at >= created_after)
        if created_before is not None:
            query = query.where(c.created_at < created_before)
        if cursor is not None:
            after_time, after_id = decode_cursor(cursor)
            query = query.where(
                or_(c.created_at > after_time, and_(c.created_at == after_time, c.id > after_id))
            )
        rows = self.conn.execute(query.order_by(c.created_at, c.id).limit(limit + 1)).all()
        items = [instance_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more else None
        return items, next_cursor

    # ------------------------------------------------------------ the log

    def append(self, records: Sequence[TransitionRecord]) -> None:
        """Append log rows; a duplicate (instance, seq) means another writer won."""
        if records:
            rows = [_record_values(r) for r in records]
            self.conn.execute(prebuilt.statements(self.t).append, rows)

    def log(
        self, instance_id: str, *, upto: int | None = None, after: int | None = None
    ) -> list[TransitionRecord]:
        """An instance's log rows in order, optionally up to / after a sequence number."""
        return logread.instance_log(self.conn, self.t, instance_id, upto=upto, after=after)

    # ------------------------------------------------------------ machines

    def get_machine(self, name: str, version: str) -> tuple[str, dict[str, Any]] | None:
        """The stored (fingerprint, definition) of a machine version, if registered."""
        c = self.t.machines.c
        row = self.conn.execute(
            select(c.fingerprint, c.definition).where(c.name == name, c.version == version)
        ).first()
        return (row.fingerprint, row.definition) if row is not None else None

    def put_machine(
        self, name: str, version: str, fingerprint: str, definition: dict[str, Any], now: datetime
    ) -> None:
        """Store a machine version's definition (insert only; versions are immutable)."""
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        self.conn.execute(
            insert(self.t.machines)
            .values(
                name=name,
                version=version,
                fingerprint=fingerprint,
                definition=definition,
                registered_at=now,
            )
            .on_conflict_do_nothing()
        )

    def machine_definitions(self) -> list[dict[str, Any]]:
        """Every stored machine definition, by name and version."""
        c = self.t.machines.c
        rows = self.conn.execute(select(c.definition).order_by(c.name, c.version))
        return [r.definition for r in rows]
