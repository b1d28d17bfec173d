"""What only PostgreSQL does: advisory locks for migrations, its schema, NOTIFY."""

from __future__ import annotations

import zlib
from typing import Any

import psycopg
import pydantic_core
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb
from sqlalchemy import Connection, Engine, Insert, Select, Table, func, select
from sqlalchemy.schema import CreateSchema

from statewf.store.schema import Tables


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
    which costs more CPU than the round trip itself. Connections come from (and go
    back to) the store's autocommit pool; driver errors are left to the caller, which
    wraps them.
    """

    def __init__(
        self, engine: Engine, read: Select[Any], write: Insert, json_params: dict[str, bool]
    ) -> None:
        self.engine = engine
        self.read_sql = str(read.compile(dialect=engine.dialect))
        self.write_sql = str(write.compile(dialect=engine.dialect))
        # parameter name -> True for a document (json text, keys kept in order), False
        # for JSONB
        self.json_params = json_params

    def _adapt(self, name: str, value: Any) -> Any:
        document = self.json_params.get(name)
        if document is None or value is None:
            return value
        if document:
            return Json(value, dumps=pydantic_core.to_json)
        return Jsonb(value, dumps=pydantic_core.to_json)

    def read(self, instance_id: str) -> dict[str, Any] | None:
        """The snapshot row as a dict, or None."""
        raw = self.engine.raw_connection()
        try:
            conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(self.read_sql, {"id": instance_id}, prepare=True)
                row: dict[str, Any] | None = cur.fetchone()
                return row
        finally:
            raw.close()

    def write(self, params: dict[str, Any]) -> bool:
        """Run the conditional update-and-append; True if it wrote."""
        adapted = {k: self._adapt(k, v) for k, v in params.items()}
        raw = self.engine.raw_connection()
        try:
            conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
            with conn.cursor() as cur:
                cur.execute(self.write_sql, adapted, prepare=True)
                return cur.fetchone() is not None
        finally:
            raw.close()
