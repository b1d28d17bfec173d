"""What only SQLite needs: WAL, a busy timeout and write transactions that start locked.

SQLite has no row locks, no SKIP LOCKED and no LISTEN/NOTIFY. statewf opens every
transaction with ``BEGIN IMMEDIATE``, which takes the database write lock up front,
so two writers are serialized instead of failing half-way; read-only transactions
use a plain ``BEGIN`` and do not wait for writers (WAL). Workers poll.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool, StaticPool


def is_memory(url: str) -> bool:
    """Whether ``url`` names an in-memory SQLite database (``sqlite://``)."""
    return make_url(url).database in (None, "", ":memory:")


def create(url: str, *, echo: bool = False) -> Engine:
    """An engine for a SQLite file (no pooling) or an in-memory database (one shared
    connection, usable from any thread, so the async twins see the same database).

    One connection has one transaction at a time: the store serializes the
    transactions of an in-memory database itself (:class:`~statewf.store.SqlStore`).
    """
    if is_memory(url):
        engine = create_engine(
            url, echo=echo, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_engine(url, echo=echo, poolclass=NullPool)
    configure(engine)
    return engine


def configure(engine: Engine, busy_timeout_ms: int = 30_000) -> None:
    """Install the connection hooks statewf relies on for SQLite."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor, busy_timeout_ms / 1000)  # ignored (memory) for in-memory databases
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("statewf_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


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
