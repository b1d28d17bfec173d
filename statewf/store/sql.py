"""The store: every query statewf runs, as SQLAlchemy Core, for SQLite and PostgreSQL.

:class:`SqlStore` owns the connection pool and hands out :class:`~statewf.store.tx.Tx`
objects, one per database transaction (``Tx`` is the only code that knows which query
to run). ``send``'s one-statement writes run on the drivers directly: PostgreSQL's in
:mod:`statewf.store.postgres`, SQLite's in :mod:`statewf.store.sqlite_fast`. Driver
errors are wrapped here, at the edge, into :class:`~statewf.errors.StoreError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import psycopg
from sqlalchemy import JSON, Connection, Engine, bindparam, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from statewf.errors import ConcurrencyConflict, InvalidInput, StatewfError, StoreError
from statewf.records import EffectRecord, Instance, TransitionRecord
from statewf.store import (
    connect,
    driver_errors,
    logrows,
    migrations,
    optional_indexes,
    pg_effects,
    pg_write,
    postgres,
    prebuilt,
    sqlite,
    sqlite_fast,
)
from statewf.store.effects import EffectRows
from statewf.store.schema import build_tables, is_document
from statewf.store.tx import INSTANCE_FIELDS as _INSTANCE_FIELDS
from statewf.store.tx import MAX_PAGE as MAX_PAGE
from statewf.store.tx import Tx as Tx
from statewf.store.tx import decode_cursor as decode_cursor
from statewf.store.tx import encode_cursor as encode_cursor
from statewf.store.tx import instance_from_row as instance_from_row
from statewf.store.tx import record_from_row as record_from_row

_RECORD_FIELDS = logrows.RECORD_FIELDS


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
    def prepared_write(self) -> pg_write.PreparedWrite | None:
        """PostgreSQL's one-row conditional write on libpq (statewf's own pool), else None."""
        return self._prepared_write

    @property
    def conditional_writes(self) -> bool:
        """True where :meth:`read_instance` + :meth:`write_if_version` make a fast path."""
        return self.dialect == "postgresql" or self._lite is not None

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
        if self._lite is not None:
            found_row = self._lite.read(instance_id)
            return Instance(**{f: found_row[f] for f in _INSTANCE_FIELDS}) if found_row else None
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
        previous: Instance | None = None,
    ) -> bool:
        """Update the snapshot and append its log row in one statement, if unchanged.

        The UPDATE matches only while the row is still at ``expected_version``; the
        INSERT of the log row reads from it (on SQLite: follows it in one ``BEGIN
        IMMEDIATE`` transaction), so both happen or neither does. False means another
        writer got there first. ``release`` also clears the instance's lease (a run's
        final row). ``previous``, the snapshot at ``expected_version`` the decision was
        made from, lets SQLite leave the columns it keeps out of the UPDATE.
        """
        if self._fast is not None:
            try:  # self._errors() inline (a context manager costs ~1.3 us a send)
                prepared = self._prepared_write
                if prepared is not None:
                    args = prepared.row_args(snapshot, record, expected_version, release)
                    if args is not None:
                        return prepared.write_args(self._fast, args) > 0
                params = prebuilt.conditional_params(snapshot, record, expected_version, release)
                return self._fast.write(params)
            except psycopg.errors.UniqueViolation:
                return False  # another writer appended this seq first
            except psycopg.Error as exc:
                raise driver_errors.wrap_driver(exc, self.url) from exc
            except Exception as exc:
                wrapped = self._store_error(exc)
                if wrapped is None:
                    raise
                raise wrapped from exc
        if self._lite is not None:
            written = self._lite.write(
                snapshot, record, expected_version, release=release, previous=previous
            )
            return written is not None
        params = prebuilt.conditional_params(snapshot, record, expected_version, release)
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
        *,
        previous: Instance | None = None,
    ) -> list[EffectRecord] | None:
        """:meth:`write_if_version` that also records the row's effects in the outbox, in
        the same statement (SQLite: transaction); their records, or None (nothing
        written) if the instance moved.
        """
        if self._lite is not None:
            rows = effects.rows()
            lite_ids = self._lite.write(
                snapshot, record, expected_version, previous=previous, effects=rows
            )
            if lite_ids is None:
                return None
            return effects.records(
                [(i, r["position"]) for i, r in zip(lite_ids, rows, strict=True)]
            )
        params = prebuilt.conditional_params(snapshot, record, expected_version, False)
        params.update(effects.params())
        try:
            if self._fast is not None:
                with self._errors():
                    prepared = self._prepared_effects
                    found_ids = prepared.write_effects(self._fast, params) if prepared else None
                    ids = self._fast.write_effects(params) if found_ids is None else found_ids
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
        self._prepared_write: pg_write.PreparedWrite | None = None
        self._prepared_effects: pg_effects.PreparedEffectsWrite | None = None
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
            self._prepared_write = pg_write.PreparedWrite(
                self._write_query, set(json_params), b"statewf_write"
            )
            self._prepared_effects = pg_effects.PreparedEffectsWrite(
                self._write_effects_query, set(json_params), b"statewf_write_effects"
            )
        # SQLite: the same conditional write on kept sqlite3 connections, from a pool of
        # their own for a file (the store's pool stays whole for transactions), the one
        # shared connection, in its turn, for an in-memory database
        self._lite: sqlite_fast.SqliteFastPath | None = None
        if self.dialect == "sqlite" and self.owns_engine:
            memory = self._turns is not None
            self._lite = sqlite_fast.SqliteFastPath(
                self.engine
                if memory
                else sqlite.create(self.engine.url.render_as_string(hide_password=False)),
                t,
                self.engine.url.render_as_string(hide_password=True),
                turns=self._turns,
                keep=1 if memory else 5,
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
        except Exception as exc:
            wrapped = self._store_error(exc)
            if wrapped is None:
                raise
            raise wrapped from exc

    def _store_error(self, exc: Exception) -> StatewfError | None:
        """The statewf error :meth:`_errors` raises for ``exc`` (None: ``exc`` itself)."""
        if isinstance(exc, StatewfError):
            return None
        if isinstance(exc, UnicodeEncodeError):
            return driver_errors.unencodable(exc)
        if isinstance(exc, DBAPIError):
            if exc.connection_invalidated and self.dialect == "postgresql":
                self._connections_lost()
            return driver_errors.wrap(exc, self.url, self.tables.transitions.name)
        if isinstance(exc, SQLAlchemyError):
            return StoreError(f"database error on {self.url}: {exc}")
        return None

    def migrate(self) -> list[int]:
        """Apply pending migrations; the numbers applied."""
        with self.transaction() as tx:
            return migrations.migrate(tx.conn, self.tables)

    def run_autocommitted(self, statement: str) -> None:
        """One statement outside any transaction (PostgreSQL's ``CREATE INDEX CONCURRENTLY``)."""
        with self._errors(), self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(statement)

    def optional_indexes(self) -> dict[str, bool]:
        """Each optional index's name and whether it is built (:mod:`optional_indexes`)."""
        return optional_indexes.present(self)

    def add_index(self, name: str) -> list[str]:
        """Build an optional index; the database index names built."""
        return optional_indexes.add(self, name)

    def drop_index(self, name: str) -> list[str]:
        """Drop an optional index; the database index names dropped."""
        return optional_indexes.drop(self, name)

    def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """A LISTEN/NOTIFY hint on PostgreSQL (delivered at commit); nothing on SQLite."""
        if self.dialect == "postgresql":
            postgres.notify(tx.conn, channel, payload)

    def dispose(self) -> None:
        """Close every pooled connection statewf opened (an adopted engine stays open)."""
        if self._lite is not None:  # first: an in-memory database's one connection is kept
            self._lite.release()
            if self._lite.engine is not self.engine:
                self._lite.engine.dispose()
        if self.owns_engine:
            self.engine.dispose()
        if self._fast is not None:
            self._fast.release()
        if self._autocommit is not None:
            self._autocommit.dispose()


def _is_json(type_: Any) -> bool:
    return isinstance(type_, JSON)
