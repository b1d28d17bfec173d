"""What only PostgreSQL does: advisory locks for migrations, its schema, NOTIFY."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import pydantic_core
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb
from sqlalchemy import Connection, Engine, Insert, Select, Table, func, select
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.schema import CreateSchema

from statewf.store.schema import Tables

T = TypeVar("T")
#: An idle connection's transaction status, as libpq's integer: ``pgconn.transaction_status``
#: costs no enum (1.8 us less per call than ``conn.info.transaction_status``).
_IDLE_STATUS = int(TransactionStatus.IDLE)


def lock_for_migration(conn: Connection, tables: Tables) -> None:
    """Create the schema if needed and hold a transaction-scoped advisory lock."""
    name = f"statewf-migrate:{tables.metadata.schema}:{tables.instances.name}"
    conn.execute(select(func.pg_advisory_xact_lock(zlib.crc32(name.encode()))))
    if tables.metadata.schema:
        conn.execute(CreateSchema(tables.metadata.schema, if_not_exists=True))


def retype_as_json(conn: Connection, table: Table, column: str) -> None:
    """ALTER a JSONB column to json text (a no-op where it is json already)."""
    # Core has no ALTER COLUMN ... TYPE; the identifiers are quoted by the dialect.
    preparer = conn.dialect.identifier_preparer
    name = preparer.quote(column)
    conn.exec_driver_sql(
        f"ALTER TABLE {preparer.format_table(table)} ALTER COLUMN {name} "
        f"TYPE json USING {name}::json"
    )


def notify(conn: Connection, channel: str, payload: str) -> None:
    """Send a NOTIFY in the current transaction (delivered at commit)."""
    conn.execute(select(func.pg_notify(channel, payload)))


class FastPath:
    """The two statements of ``send``'s fast path, run directly on psycopg.

    They are SQLAlchemy Core expressions compiled once to PostgreSQL SQL; executing
    them on the driver connection skips SQLAlchemy's per-call execution machinery,
    which costs more CPU than the round trip itself. Connections come from the
    store's autocommit pool and are kept, checked out, on a list of idle ones between
    calls (at most ``keep``): a pool check-out and check-in (with its reset) cost more
    CPU than the statement's own parameters. A connection is kept only if no
    transaction is open on it (autocommit leaves none). Driver errors are left to
    the caller, which wraps them. A connection found broken (the server restarted)
    is invalidated, not kept, and ``on_lost`` is told, so the pools are refreshed at
    once: one failed call, not one per pooled connection.
    """

    def __init__(
        self,
        engine: Engine,
        read: Select[Any],
        writes: tuple[Insert, Insert],
        json_params: dict[str, bool],
        on_lost: Callable[[], None],
        keep: int = 10,
    ) -> None:
        self.engine = engine
        self.read_sql = str(read.compile(dialect=engine.dialect))
        write, write_effects = writes
        self.write_sql = str(write.compile(dialect=engine.dialect))
        self.write_effects_sql = str(write_effects.compile(dialect=engine.dialect))
        # parameter name -> its wrapper: Json for a document (json text, keys kept in
        # order), Jsonb for the rest
        self.wrappers: tuple[tuple[str, type[Json] | type[Jsonb]], ...] = tuple(
            (name, Json if document else Jsonb) for name, document in json_params.items()
        )
        self.on_lost = on_lost
        self.keep = keep
        # each kept connection with its cursor, reused too (a cursor per call costs
        # its adapters' set-up)
        self.idle: list[tuple[PoolProxiedConnection, psycopg.Cursor[Any]]] = []

    def _adapt(self, params: dict[str, Any]) -> dict[str, Any]:
        adapted = dict(params)
        dumps = pydantic_core.to_json
        for name, wrap in self.wrappers:
            value = adapted.get(name)
            if value is not None:
                adapted[name] = wrap(value, dumps=dumps)
        return adapted

    def run(self, work: Callable[[psycopg.Cursor[Any]], T]) -> T:
        """Run ``work`` on a kept autocommit connection's cursor (driver errors propagate)."""
        try:
            raw, cur = self.idle.pop()
        except IndexError:
            raw = self.engine.raw_connection()
            cur = raw.driver_connection.cursor()  # type: ignore[union-attr]
        conn = cur.connection
        try:
            result = work(cur)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or conn.broken:
                raw.invalidate(exc)  # never back into the pool (no reset on a dead socket)
                self.on_lost()
            elif conn.closed:  # ``work`` closed it (a claim failed half-way): discard it
                raw.invalidate(exc)
            else:
                raw.close()
            raise
        except BaseException:
            raw.invalidate()
            raise
        if conn.pgconn.transaction_status == _IDLE_STATUS and len(self.idle) < self.keep:
            self.idle.append((raw, cur))
        else:
            raw.close()
        return result

    def release(self, *, lost: bool = False) -> None:
        """Give the kept connections back to the pool (``lost``: discard them)."""
        while self.idle:
            try:
                raw, _ = self.idle.pop()
            except IndexError:
                return
            if lost:
                raw.invalidate()
            else:
                raw.close()

    def read(self, instance_id: str) -> dict[str, Any] | None:
        """The snapshot row as a dict, or None."""

        def work(kept: psycopg.Cursor[Any]) -> dict[str, Any] | None:
            with kept.connection.cursor(row_factory=dict_row) as cur:
                cur.execute(self.read_sql, {"id": instance_id}, prepare=True)
                row: dict[str, Any] | None = cur.fetchone()
                return row

        return self.run(work)

    def write(self, params: dict[str, Any]) -> bool:
        """Run the conditional update-and-append; True if it wrote."""
        adapted = self._adapt(params)

        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute(self.write_sql, adapted, prepare=True)
            return cur.fetchone() is not None

        return self.run(work)

    def write_effects(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        """The conditional update-and-append that also inserts outbox rows: their
        (id, position), none if it did not write."""
        adapted = self._adapt(params)

        def work(cur: psycopg.Cursor[Any]) -> list[tuple[int, int]]:
            cur.execute(self.write_effects_sql, adapted, prepare=True)
            return [(int(i), int(p)) for i, p in cur.fetchall()]

        return self.run(work)
