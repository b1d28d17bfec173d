"""Numbered schema migrations, applied on start under a lock.

Rules (see docs/contributing.md): migrations are small, numbered, and never edited
after a release. Each migration that creates tables builds them with
``build_tables(..., version=N)`` at its own schema version N, so it creates exactly
what that version declared; later migrations ALTER them. A change to a column
makes ``schema.py`` ask the version it builds for.
``tests/integration/test_migrations.py`` fails until an empty database migrated to
the end equals the current declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from statewf.errors import StoreError
from statewf.store import postgres, sqlite, sqlite_rebuild
from statewf.store.schema import (
    SCHEMA_VERSION,
    Tables,
    build_tables,
    is_document,
    list_indexes,
    served_columns,
)

Migration = Callable[[Connection, Tables], None]


def _m0001_create_tables(conn: Connection, tables: Tables) -> None:
    # these five tables, as schema version 1 declared them
    v1 = build_tables(tables.prefix, tables.metadata.schema, version=1)
    created = [v1.instances, v1.transitions, v1.machines, v1.effects, v1.schema_version]
    v1.metadata.create_all(conn, tables=created, checkfirst=True)


def _m0002_workers(conn: Connection, tables: Tables) -> None:
    v2 = build_tables(tables.prefix, tables.metadata.schema, version=2)
    v2.metadata.create_all(conn, tables=[v2.workers], checkfirst=True)


def _m0003_documents_as_text(conn: Connection, tables: Tables) -> None:
    # JSONB reorders object keys; json text keeps them as written. SQLite stores JSON
    # as text already. On PostgreSQL this rewrites the tables (see howto-deploy).
    if conn.dialect.name != "postgresql":
        return
    for table in (tables.instances, tables.transitions, tables.machines, tables.effects):
        for column in table.columns:
            if is_document(column):
                postgres.retype_as_json(conn, table, column.name)


def _m0004_list_indexes(conn: Connection, tables: Tables) -> None:
    # CREATE INDEX (not CONCURRENTLY: migrations run in one transaction) blocks
    # writes to the instances table while it builds; see howto-deploy.
    v4 = build_tables(tables.prefix, tables.metadata.schema, version=4)
    names = {index.name for index in list_indexes(tables.prefix, 4)}
    for index in sorted(v4.instances.indexes, key=lambda i: str(i.name)):
        if index.name in names:
            index.create(conn, checkfirst=True)


def _m0005_served_workflows(conn: Connection, tables: Tables) -> None:
    # a column with a default: no table rewrite on either dialect
    (column,) = served_columns(5)
    preparer = conn.dialect.identifier_preparer
    kind = column.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(
        f"ALTER TABLE {preparer.format_table(tables.workers)} ADD COLUMN "
        f"{preparer.quote(column.name)} {kind} NOT NULL DEFAULT '[]'"
    )


def _m0006_replay_snapshots(conn: Connection, tables: Tables) -> None:
    v6 = build_tables(tables.prefix, tables.metadata.schema, version=6)
    v6.metadata.create_all(conn, tables=[v6.replay_snapshots], checkfirst=True)


def _m0007_log_without_rowid(conn: Connection, tables: Tables) -> None:
    # SQLite cannot change a table to WITHOUT ROWID in place: its documented procedure
    # (see sqlite_rebuild), in the migration's transaction. It copies the whole log once
    # (see howto-deploy).
    if conn.dialect.name != "sqlite":
        return
    sqlite_rebuild.rebuild(
        conn, build_tables(tables.prefix, tables.metadata.schema, version=7).transitions
    )


def _m0008_documents_text_affinity(conn: Connection, tables: Tables) -> None:
    # A column declared JSON has NUMERIC affinity in SQLite, which converted a bare
    # number's JSON text on insert; declared TEXT, it keeps the text. Each table with a
    # document column is rebuilt by SQLite's procedure (see sqlite_rebuild), its indexes
    # and the log's WITHOUT ROWID kept, the numbers converted so far turned back into
    # JSON text. It copies these tables once (see howto-deploy).
    if conn.dialect.name != "sqlite":
        return
    v8 = build_tables(tables.prefix, tables.metadata.schema, version=8)
    for table in (v8.instances, v8.transitions, v8.machines, v8.effects):
        documents = [column.name for column in table.columns if is_document(column)]
        sqlite_rebuild.rebuild(conn, table, documents)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "create the statewf tables", _m0001_create_tables),
    (2, "the workers table (live durable workers and their heartbeats)", _m0002_workers),
    (3, "documents as json text on PostgreSQL (keys keep their order)", _m0003_documents_as_text),
    (4, "indexes for list filters on status and kind", _m0004_list_indexes),
    (5, "the workflow versions each worker serves", _m0005_served_workflows),
    (
        6,
        "replay snapshots of long workflow runs (derived, safe to delete)",
        _m0006_replay_snapshots,
    ),
    (7, "SQLite: the log clustered on its key (WITHOUT ROWID)", _m0007_log_without_rowid),
    (
        8,
        "SQLite: document columns declared TEXT (bare numbers kept as written)",
        _m0008_documents_text_affinity,
    ),
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
