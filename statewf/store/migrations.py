"""Numbered schema migrations, applied on start under a lock.

Rules (see docs/contributing.md): migrations are small, numbered, and never edited
after a release. Migration 1 creates the tables exactly as ``schema.py`` declared
them at schema version 1 (it names them; a later migration adds its own tables or
ALTERs, never edits an earlier one). A change to a table that migration 1 creates
must first give migration 1 its own frozen copy of that table.
``tests/integration/test_migrations.py`` fails until both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from statewf.errors import StoreError
from statewf.store import postgres, sqlite
from statewf.store.schema import SCHEMA_VERSION, Tables

Migration = Callable[[Connection, Tables], None]


def _m0001_create_tables(conn: Connection, tables: Tables) -> None:
    # frozen at schema version 1: these five tables, unchanged since
    v1 = [tables.instances, tables.transitions, tables.machines, tables.effects]
    tables.metadata.create_all(conn, tables=[*v1, tables.schema_version], checkfirst=True)


def _m0002_workers(conn: Connection, tables: Tables) -> None:
    tables.metadata.create_all(conn, tables=[tables.workers], checkfirst=True)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "create the statewf tables", _m0001_create_tables),
    (2, "the workers table (live durable workers and their heartbeats)", _m0002_workers),
]


def current_version(conn: Connection, tables: Tables) -> int:
    """The highest applied migration, 0 for an empty database."""
    if not conn.dialect.has_table(
        conn, tables.schema_version.name, schema=tables.schema_version.schema
    ):
        return 0
    return int(conn.execute(select(func.max(tables.schema_version.c.version))).scalar() or 0)


def migrate(conn: Connection, tables: Tables) -> list[int]:
    """Bring the database up to :data:`SCHEMA_VERSION` inside ``conn``'s transaction."""
    if conn.dialect.name == "postgresql":
        postgres.lock_for_migration(conn, tables)
    else:
        sqlite.lock_for_migration(conn)
    version = current_version(conn, tables)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database schema is at version {version}, newer than this statewf "
            f"understands ({SCHEMA_VERSION}); upgrade statewf before connecting"
        )
    applied = []
    for number, description, step in MIGRATIONS:
        if number <= version:
            continue
        step(conn, tables)
        conn.execute(
            tables.schema_version.insert().values(
                version=number, description=description, applied_at=datetime.now(UTC)
            )
        )
        applied.append(number)
    return applied
