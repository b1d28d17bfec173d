"""A database brought to an older schema version, as that release of statewf left it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from statewf.store.migrations import MIGRATIONS
from statewf.store.schema import Tables


def migrate_to(conn: Connection, tables: Tables, version: int) -> None:
    """Apply migrations 1..``version`` in ``conn``'s transaction, each recorded as applied
    (``tables``: declared at ``version``)."""
    now = datetime.now(UTC)
    for number, description, step in MIGRATIONS[:version]:
        step(conn, tables)
        conn.execute(
            tables.schema_version.insert().values(
                version=number, description=description, applied_at=now
            )
        )
