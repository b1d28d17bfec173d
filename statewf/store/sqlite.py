"""What only SQLite needs: WAL, a busy timeout and write transactions that start locked.

SQLite has no row locks, no SKIP LOCKED and no LISTEN/NOTIFY. statewf opens every
transaction with ``BEGIN IMMEDIATE``, which takes the database write lock up front,
so two writers are serialized instead of failing half-way; read-only transactions
use a plain ``BEGIN`` and do not wait for writers (WAL). Workers poll.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool, StaticPool


def is_memory(url: str) -> bool:
    """Whether ``url`` names an in-memory SQLite database (``sqlite://``)."""
    return make_url(url).database in (None, "", ":memory:")


def create(url: str, *, echo: bool = False, pool_size: int = 5) -> Engine:
    """An engine for a SQLite file (a pool of connections) or an in-memory database (one
    shared connection, usable from any thread, so the async twins see the same database).

    File connections are pooled: opening one costs its PRAGMAs, and closing the last
    connection of a WAL database checkpoints it, together about 1.2 ms per transaction
    that a pooled connection does not pay. A pooled connection serves one thread at a
    time, so it may move between threads (``check_same_thread=False``). The one
    connection of an in-memory database has one transaction at a time: the store
    serializes them itself (:class:`~statewf.store.SqlStore`).
    """
    if is_memory(url):
        engine = create_engine(
            url, echo=echo, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_engine(
            url,
            echo=echo,
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False},
        )
    configure(engine)
    return engine


#: Engines configured already: an application's engine may back several statewf engines.
_CONFIGURED: weakref.WeakSet[Engine] = weakref.WeakSet()

#: Marks a pooled connection that has statewf's settings (in its connection record).
_READY = "statewf_sqlite_ready"


def configure(engine: Engine, busy_timeout_ms: int = 30_000) -> None:
    """Install the connection hooks statewf relies on for SQLite (once per engine).

    An application's own engine may hold connections opened before statewf saw it;
    each gets the settings at its first transaction through statewf instead.
    """
    if engine in _CONFIGURED:
        return
    _CONFIGURED.add(engine)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        _prepare(dbapi_connection, busy_timeout_ms)
        record.info[_READY] = True

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if not conn.info.get(_READY):
            _prepare(conn.connection.dbapi_connection, busy_timeout_ms)
            conn.info[_READY] = True
        readonly = conn.get_execution_options().get("statewf_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _prepare(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    _enable_wal(cursor, busy_timeout_ms / 1000)  # ignored (memory) for in-memory databases
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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
