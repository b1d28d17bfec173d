"""Indexes an operator adds by choice, outside the numbered migrations.

Today there is one, ``state``: ``(state, created_at, id)`` and ``(machine, state,
created_at, id)`` on the instances table, which ``list(state=...)`` and
``list(machine=..., state=...)`` then read their page from at any table size. It is
not in the schema because it has a price on the write path: ``state`` changes with
nearly every transition, and while any index covers it, such an update can never be
a heap-only (HOT) update, so PostgreSQL adds an entry to each of the table's indexes
for every send and every step (docs/performance.md measures it). An application that
lists by state at scale pays that; one that does not, does not.

On PostgreSQL the indexes are built ``CONCURRENTLY`` (writers are not blocked while
they build) on an autocommitted connection; a build that failed half-way leaves an
invalid index behind, which :func:`add` drops and builds again. On SQLite they are
plain ``CREATE INDEX`` statements in a write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from statewf.errors import InvalidInput

if TYPE_CHECKING:
    from statewf.store.sql import SqlStore

#: Each optional index by the name an operator gives it: (index suffix, columns).
OPTIONAL: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "state": (
        ("instances_state", ("state", "created_at", "id")),
        ("instances_machine_state", ("machine", "state", "created_at", "id")),
    ),
}


def _parts(name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The indexes behind an optional index's name, or a clear error."""
    if name not in OPTIONAL:
        known = ", ".join(sorted(OPTIONAL))
        raise InvalidInput(f"no optional index named {name!r}; the optional indexes are: {known}")
    return OPTIONAL[name]


def present(store: SqlStore) -> dict[str, bool]:
    """Each optional index's name, and whether all its indexes exist and are valid."""
    with store.transaction(readonly=True) as tx:
        built = _valid_indexes(tx.conn, store)
    prefix = store.tables.prefix
    return {
        name: all(f"{prefix}{suffix}" in built for suffix, _ in parts)
        for name, parts in OPTIONAL.items()
    }


def add(store: SqlStore, name: str) -> list[str]:
    """Build the optional index ``name``; the database index names built (none if present)."""
    parts = _parts(name)
    prefix = store.tables.prefix
    with store.transaction(readonly=True) as tx:
        valid = _valid_indexes(tx.conn, store)
        invalid = _invalid_indexes(tx.conn, store)
    built = []
    for suffix, columns in parts:
        index = f"{prefix}{suffix}"
        if index in valid:
            continue
        if index in invalid:  # a concurrent build that failed half-way
            _run(store, f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(store, index)}")
        _run(store, _create(store, index, columns))
        built.append(index)
    return built


def drop(store: SqlStore, name: str) -> list[str]:
    """Drop the optional index ``name``; the database index names dropped."""
    parts = _parts(name)
    prefix = store.tables.prefix
    with store.transaction(readonly=True) as tx:
        existing = _valid_indexes(tx.conn, store) | _invalid_indexes(tx.conn, store)
    dropped = []
    for suffix, _ in parts:
        index = f"{prefix}{suffix}"
        if index in existing:
            concurrently = " CONCURRENTLY" if store.dialect == "postgresql" else ""
            _run(store, f"DROP INDEX{concurrently} IF EXISTS {_qualified(store, index)}")
            dropped.append(index)
    return dropped


def _create(store: SqlStore, index: str, columns: Sequence[str]) -> str:
    """The ``CREATE INDEX`` statement of one index on the instances table."""
    quote = store.engine.dialect.identifier_preparer.quote
    table = store.engine.dialect.identifier_preparer.format_table(store.tables.instances)
    cols = ", ".join(quote(c) for c in columns)
    concurrently = " CONCURRENTLY" if store.dialect == "postgresql" else ""
    return f"CREATE INDEX{concurrently} IF NOT EXISTS {quote(index)} ON {table} ({cols})"


def _qualified(store: SqlStore, index: str) -> str:
    """An index's name with the tables' schema, quoted."""
    quote = store.engine.dialect.identifier_preparer.quote
    schema = store.tables.metadata.schema
    return f"{quote(schema)}.{quote(index)}" if schema else quote(index)


def _run(store: SqlStore, statement: str) -> None:
    """One DDL statement: autocommitted on PostgreSQL (``CONCURRENTLY`` needs it)."""
    if store.dialect == "postgresql":
        store.run_autocommitted(statement)
    else:
        with store.transaction() as tx:
            tx.conn.exec_driver_sql(statement)


def _valid_indexes(conn: Connection, store: SqlStore) -> set[str]:
    """The names of the instances table's usable indexes."""
    return _indexes(conn, store, valid=True)


def _invalid_indexes(conn: Connection, store: SqlStore) -> set[str]:
    """The names of the instances table's indexes a failed concurrent build left invalid."""
    return _indexes(conn, store, valid=False) if store.dialect == "postgresql" else set()


def _indexes(conn: Connection, store: SqlStore, *, valid: bool) -> set[str]:
    """The instances table's index names, valid or invalid ones (PostgreSQL), or all (SQLite)."""
    table = store.tables.instances
    if store.dialect == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = to_regclass(%(table)s) AND i.indisvalid = %(valid)s",
            {"table": store.engine.dialect.identifier_preparer.format_table(table), "valid": valid},
        )
    else:
        rows = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table.name,)
        )
    return {row[0] for row in rows}
