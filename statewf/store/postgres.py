"""What only PostgreSQL does: advisory locks for migrations, its schema, NOTIFY."""

from __future__ import annotations

import zlib

from sqlalchemy import Connection, func, select
from sqlalchemy.schema import CreateSchema

from statewf.store.schema import Tables


def lock_for_migration(conn: Connection, tables: Tables) -> None:
    """Create the schema if needed and hold a transaction-scoped advisory lock."""
    name = f"statewf-migrate:{tables.metadata.schema}:{tables.instances.name}"
    conn.execute(select(func.pg_advisory_xact_lock(zlib.crc32(name.encode()))))
    if tables.metadata.schema:
        conn.execute(CreateSchema(tables.metadata.schema, if_not_exists=True))


def notify(conn: Connection, channel: str, payload: str) -> None:
    """Send a NOTIFY in the current transaction (delivered at commit)."""
    conn.execute(select(func.pg_notify(channel, payload)))
