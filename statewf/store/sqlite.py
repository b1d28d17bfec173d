"""What only SQLite needs: WAL, a busy timeout and write transactions that start locked.

SQLite has no row locks, no SKIP LOCKED and no LISTEN/NOTIFY. statewf opens every
transaction with ``BEGIN IMMEDIATE``, which takes the database write lock up front,
so two writers are serialized instead of failing half-way; workers poll.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, event


def configure(engine: Engine, busy_timeout_ms: int = 30_000) -> None:
    """Install the connection hooks statewf relies on for SQLite."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def lock_for_migration(conn: Connection) -> None:
    """Nothing to do: BEGIN IMMEDIATE already holds the database write lock."""
