"""What only SQLite needs: WAL, a busy timeout and write transactions that start locked.

SQLite has no row locks, no SKIP LOCKED and no LISTEN/NOTIFY. statewf opens every
transaction with ``BEGIN IMMEDIATE``, which takes the database write lock up front,
so two writers are serialized instead of failing half-way; workers poll.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Connection, Engine, event


def configure(engine: Engine, busy_timeout_ms: int = 30_000) -> None:
    """Install the connection hooks statewf relies on for SQLite."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _enable_wal(cursor: Any, timeout_s: float) -> None:
    """Switch the database to WAL. While another connection converts the same new file,
    SQLite answers "database is locked" at once (the busy timeout does not apply), so
    retry until the timeout instead of failing the first concurrent start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def lock_for_migration(conn: Connection) -> None:
    """Nothing to do: BEGIN IMMEDIATE already holds the database write lock."""
