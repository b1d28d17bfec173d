"""The store: every query statewf runs, as SQLAlchemy Core, for SQLite and PostgreSQL.

:class:`SqlStore` owns the connection pool and hands out :class:`Tx` objects, one per
database transaction. ``Tx`` is the only code that knows which query to run; the
engine decides *what* to write, ``Tx`` knows *how*. Driver errors are wrapped here,
at the edge, into :class:`~statewf.errors.StoreError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Row,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from statewf.errors import ConcurrencyConflict, InvalidInput, StatewfError, StoreError
from statewf.records import EffectRecord, Instance, TransitionRecord
from statewf.store import (
    connect,
    cursors,
    driver_errors,
    logrows,
    migrations,
    postgres,
    prebuilt,
    sqlite,
)
from statewf.store.effects import EffectRows, OutboxQueries, version_filter
from statewf.store.schema import Tables, UTCDateTime, build_tables, is_document

MAX_PAGE = 1000

_INSTANCE_FIELDS = (
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
    return Instance(**{f: m[f] for f in _INSTANCE_FIELDS})


def record_from_row(row: Row[Any]) -> TransitionRecord:
    """Build a :class:`TransitionRecord` from a transitions-table row."""
    m = row._mapping
    return TransitionRecord(**{f: m[f] for f in _RECORD_FIELDS})


def _instance_values(snapshot: Instance) -> dict[str, Any]:
    values = snapshot.model_dump(include=set(_INSTANCE_FIELDS))
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
        c = self.t.transitions.c
        query = logrows.select_rows(self.t).where(c.instance_id == instance_id)
        if upto is not None:
            query = query.where(c.seq <= upto)
        if after is not None:
            query = query.where(c.seq > after)
        return logrows.read(self.conn, query.order_by(c.seq), instance_id)

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


#: An application's own SQLAlchemy engine, which statewf's faces accept instead of a URL.
DatabaseEngine = Engine


class SqlStore:
    """A connection pool to one database, with statewf's tables and migrations."""

    def __init__(
        self,
        url: str | Engine,
        *,
        schema: str | None = None,
        table_prefix: str = "statewf_",
        pool_size: int = 10,
        max_overflow: int = 20,
        echo: bool = False,
    ) -> None:
        #: False when the application handed in its own SQLAlchemy engine: its pool is
        #: the application's to dispose, and statewf keeps to it (no second pool).
        self.owns_engine = not isinstance(url, Engine)
        if isinstance(url, Engine):
            engine = connect.adopt(url)
        else:
            engine = connect.create(url, pool_size=pool_size, max_overflow=max_overflow, echo=echo)
        if schema is not None and engine.dialect.name == "sqlite":
            raise InvalidInput("schema= is for PostgreSQL; on SQLite use table_prefix= instead")
        self.engine: Engine = engine
        # An in-memory database is one connection shared by every thread: its
        # transactions must take turns (a file database has SQLite's write lock).
        self._turns: threading.RLock | None = (
            threading.RLock()
            if engine.dialect.name == "sqlite" and sqlite.is_memory(str(engine.url))
            else None
        )
        # The fast path of send runs in autocommit on a pool of its own: switching a
        # pooled connection's isolation level per use costs round trips. An adopted
        # engine gets no second pool, and so no fast path: sends take the locked path.
        self._autocommit: Engine | None = (
            connect.autocommit_pool(engine, pool_size, max_overflow)
            if engine.dialect.name == "postgresql" and self.owns_engine
            else None
        )
        self.dialect: str = engine.dialect.name
        self.tables = build_tables(table_prefix, schema)
        self._build_fast_path()
        self.url = engine.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Tx]:
        """A database transaction: committed on success, rolled back on any error.

        ``readonly`` transactions do not take SQLite's write lock (``BEGIN`` rather
        than ``BEGIN IMMEDIATE``); on PostgreSQL they are ordinary transactions.
        """
        with self._turn(), self._errors(), self.engine.connect() as conn:
            if readonly:
                conn = conn.execution_options(statewf_readonly=True)
            with conn.begin():
                yield Tx(conn, self.tables)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Wait for this thread's turn on an in-memory database's one connection."""
        if self._turns is None:
            yield
            return
        with self._turns:
            yield

    @property
    def fast_path(self) -> postgres.FastPath | None:
        """PostgreSQL's kept autocommit connections for one-statement writes, else None."""
        return self._fast

    @property
    def conditional_writes(self) -> bool:
        """True where :meth:`read_instance` + :meth:`write_if_version` make a fast path."""
        return self.dialect == "postgresql"

    def read_instance(self, instance_id: str) -> Instance | None:
        """One autocommitted read of a snapshot row (no transaction, no lock)."""
        if self._fast is not None:
            try:
                with self._errors():
                    row = self._fast.read(instance_id)
            except psycopg.Error as exc:
                raise driver_errors.wrap_driver(exc, self.url) from exc
            if row is None:
                return None
            for column in ("wake_at", "created_at", "updated_at"):
                if row[column] is not None:
                    row[column] = row[column].astimezone(UTC)
            return Instance(**{f: row[f] for f in _INSTANCE_FIELDS})
        with self._turn(), self._errors(), self._single_statement() as conn:
            found = conn.execute(self._read_query, {"id": instance_id}).first()
        return instance_from_row(found) if found is not None else None

    def write_if_version(
        self,
        snapshot: Instance,
        record: TransitionRecord,
        expected_version: int,
        *,
        release: bool = False,
    ) -> bool:
        """Update the snapshot and append its log row in one statement, if unchanged.

        PostgreSQL only. The UPDATE matches only while the row is still at
        ``expected_version``; the INSERT of the log row reads from it, so both happen
        or neither does. False means another writer got there first. ``release``
        also clears the instance's lease (a run's final row).
        """
        params = prebuilt.conditional_params(snapshot, record, expected_version, release)
        if self._fast is not None:
            try:
                with self._errors():
                    return self._fast.write(params)
            except psycopg.errors.UniqueViolation:
                return False  # another writer appended this seq first
            except psycopg.Error as exc:
                raise driver_errors.wrap_driver(exc, self.url) from exc
        try:
            with self._errors(), self._single_statement() as conn:
                return conn.execute(self._write_query, params).first() is not None
        except ConcurrencyConflict:
            return False

    def write_with_effects(
        self,
        snapshot: Instance,
        record: TransitionRecord,
        expected_version: int,
        effects: EffectRows,
    ) -> list[EffectRecord] | None:
        """:meth:`write_if_version` that also records the row's effects in the outbox, in
        the same statement; their records, or None (nothing written) if the instance moved.

        PostgreSQL only.
        """
        params = prebuilt.conditional_params(snapshot, record, expected_version, False)
        params.update(effects.params())
        try:
            if self._fast is not None:
                with self._errors():
                    ids = self._fast.write_effects(params)
            else:
                with self._errors(), self._single_statement() as conn:
                    found = conn.execute(self._write_effects_query, params).all()
                    ids = [(int(i), int(p)) for i, p in found]
        except psycopg.errors.UniqueViolation:
            return None  # another writer appended this seq first
        except psycopg.Error as exc:
            raise driver_errors.wrap_driver(exc, self.url) from exc
        except ConcurrencyConflict:
            return None
        return effects.records(ids) if ids else None

    @contextmanager
    def statement(self) -> Iterator[Tx]:
        """A ``Tx`` for one statement: autocommitted on PostgreSQL (no BEGIN, no COMMIT
        round trip), a transaction of its own on SQLite or an adopted engine."""
        with self._turn(), self._errors(), self._single_statement() as conn:
            yield Tx(conn, self.tables)

    @contextmanager
    def _single_statement(self) -> Iterator[Connection]:
        """A connection for one statement: autocommitted on statewf's own pool, else a
        transaction of its own on the adopted engine's pool."""
        if self._autocommit is not None:
            with self._autocommit.connect() as conn:
                yield conn
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _build_fast_path(self) -> None:
        # Built once: a statement with bind parameters is compiled once and then
        # served from SQLAlchemy's cache (and prepared by psycopg) on every send.
        t = self.tables
        c = t.instances.c
        self._read_query = select(t.instances).where(c.id == bindparam("id"))
        self._write_query, self._write_effects_query = prebuilt.conditional_writes(
            t, _RECORD_FIELDS
        )
        self._fast: postgres.FastPath | None = None
        if self._autocommit is not None:
            # JSON parameters, and whether each is a document (json text) or JSONB
            json_params = {
                f"{prefix}_{c.name}": is_document(c)
                for prefix, table in (("i", t.instances), ("t", t.transitions))
                for c in table.c
                if _is_json(c.type)
            }
            json_params["e_args"] = True
            self._fast = postgres.FastPath(
                self._autocommit,
                self._read_query,
                (self._write_query, self._write_effects_query),
                json_params,
                on_lost=self._connections_lost,
                keep=pool.size() if isinstance(pool := self._autocommit.pool, QueuePool) else 10,
            )

    def _connections_lost(self) -> None:
        """The server dropped a connection (it restarted): every pooled one is dead too.

        Both pools start afresh, so the next call connects anew instead of failing once
        per pooled connection. Connections in use are discarded when given back.
        """
        if self.owns_engine:  # an adopted engine's pool is invalidated by SQLAlchemy itself
            self.engine.dispose()
        if self._fast is not None:
            self._fast.release(lost=True)
        if self._autocommit is not None:
            self._autocommit.dispose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StatewfError:
            raise
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"a string argument cannot be stored: {exc.reason} at position {exc.start} "
                "(a lone surrogate?); pass valid Unicode text"
            ) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated and self.dialect == "postgresql":
                self._connections_lost()
            raise driver_errors.wrap(exc, self.url, self.tables.transitions.name) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database error on {self.url}: {exc}") from exc

    def migrate(self) -> list[int]:
        """Apply pending migrations; the numbers applied."""
        with self.transaction() as tx:
            return migrations.migrate(tx.conn, self.tables)

    def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """A LISTEN/NOTIFY hint on PostgreSQL (delivered at commit); nothing on SQLite."""
        if self.dialect == "postgresql":
            postgres.notify(tx.conn, channel, payload)

    def dispose(self) -> None:
        """Close every pooled connection statewf opened (an adopted engine stays open)."""
        if self.owns_engine:
            self.engine.dispose()
        if self._fast is not None:
            self._fast.release()
        if self._autocommit is not None:
            self._autocommit.dispose()


def _is_json(type_: Any) -> bool:
    return isinstance(type_, JSON)
