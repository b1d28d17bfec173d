"""Conditional writes sent from the event loop itself (PostgreSQL): no thread hop.

A durable run's step row used to go to a thread that ran the write and handed the
answer back to the event loop: a wake-up of the thread, a wake-up of the loop, and
the thread's own bookkeeping, about 100 us of CPU per write on top of the statement.
A :class:`LoopConnection` is one connection of the store's autocommit pool, kept by
its user (:class:`durable.execution.batching.RowBatcher`), whose prepared statements
are sent with libpq's nonblocking calls (psycopg keeps every connection in libpq's
nonblocking mode): ``send_query_prepared``, then the loop watches the socket and the
answer is read when it is there. Other coroutines run meanwhile; nothing here blocks
the loop on the network. Opening one (connecting, preparing its statements) blocks:
it is done in a thread, once per connection.

The parameters are the ones the thread path sends (:mod:`statewf.store.pg_write` for a
row, :mod:`statewf.store.batched` for several), so the same rows are stored; a failed
result is raised as psycopg's own error class, so callers map it as before. A
connection that fails is dropped (never given back to the pool) and its user is told.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy.pool import PoolProxiedConnection

from statewf.store import pg_write
from statewf.store.postgres import FastPath

#: The status of a statement's result that returned rows (as an int, as libpq gives it).
TUPLES_OK = int(pq.ExecStatus.TUPLES_OK)
_IDLE = pq.TransactionStatus.IDLE
_BAD = pq.ConnStatus.BAD
_FATAL = pq.ExecStatus.FATAL_ERROR

#: A statement's result, as libpq gives it.
Result = pq.abc.PGresult
#: What the user hears of one statement: its result, or the error that ended it.
Answer = Callable[[Result | None, BaseException | None], None]


class LoopConnection:
    """One kept autocommit connection, its statements prepared, driven by an event loop.

    One statement at a time: :meth:`execute` sends it and returns at once; ``answer``
    is called later, from the loop, with the statement's result (whatever its status)
    or with the connection's error (the connection is then :attr:`broken`).
    """

    def __init__(self, raw: PoolProxiedConnection, conn: psycopg.Connection[Any]) -> None:
        self._raw = raw
        self._pgconn = conn.pgconn
        self.encoding = conn.info.encoding
        self._fd = self._pgconn.socket
        self._loop: asyncio.AbstractEventLoop | None = None
        self._answer: Answer | None = None
        self._result: Result | None = None
        #: the connection failed (or was closed): it takes no more statements
        self.broken = False

    @classmethod
    def open(cls, fast: FastPath, statements: Mapping[bytes, bytes]) -> LoopConnection:
        """Check a connection out of ``fast``'s pool and prepare ``statements`` (name: SQL)
        on it. Blocking: call it in a thread. Driver errors propagate."""
        raw = fast.engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert isinstance(conn, psycopg.Connection)
            for name, sql in statements.items():
                pg_write.prepare(conn, name, sql)
        except BaseException:
            raw.invalidate()
            raise
        return cls(raw, conn)

    @property
    def busy(self) -> bool:
        """Whether a statement is on its way."""
        return self._answer is not None

    @property
    def backend_pid(self) -> int:
        """The server process of this connection."""
        return int(self._pgconn.backend_pid)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the connection's socket from ``loop`` (call it in the loop's thread)."""
        self._loop = loop
        loop.add_reader(self._fd, self._readable)

    def execute(self, name: bytes, args: Sequence[bytes | None], answer: Answer) -> None:
        """Send the prepared statement ``name`` with text ``args``; ``answer`` follows."""
        assert self._loop is not None
        assert self._answer is None
        assert not self.broken
        self._answer = answer
        self._result = None
        pgconn = self._pgconn
        try:
            # libpq takes None for a NULL
            pgconn.send_query_prepared(name, args)
            if pgconn.flush():  # more to send than the socket took at once
                self._loop.add_writer(self._fd, self._writable)
        except psycopg.Error as exc:
            self._loop.call_soon(self._fail, exc)

    def _writable(self) -> None:
        try:
            if not self._pgconn.flush():
                assert self._loop is not None
                self._loop.remove_writer(self._fd)
        except psycopg.Error as exc:
            self._fail(exc)

    def _readable(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # the statement's answer is complete
                    answer, self._answer = self._answer, None
                    if answer is not None:
                        first, self._result = self._result, None
                        answer(first, None)
                    break
                # the first result, unless an error follows it: an implicit transaction
                # commits after its rows were sent, and a failed commit (a deferred
                # constraint) comes as a second result (libpq's PQexec keeps it too)
                if self._result is None or (
                    result.status == _FATAL and self._result.status != _FATAL
                ):
                    self._result = result
            if pgconn.status == _BAD:
                raise psycopg.OperationalError("the connection to the server was lost")
        except psycopg.Error as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.broken:
            return
        self.close(lost=True)
        answer, self._answer = self._answer, None
        if answer is not None:
            answer(None, exc)

    def close(self, *, lost: bool = False) -> None:
        """Stop watching the socket and give the connection back (``lost``, or a
        statement still on its way: discard it). Call it in the loop's thread."""
        if self.broken:
            return
        self.broken = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                loop.remove_reader(self._fd)
                loop.remove_writer(self._fd)
        if lost or self._answer is not None or self._pgconn.transaction_status != _IDLE:
            self._raw.invalidate()
        else:
            self._raw.close()


def failure(result: Result, encoding: str) -> psycopg.Error | None:
    """The psycopg error of a result that did not return rows, else None."""
    if result.status == TUPLES_OK:
        return None
    return psycopg.errors.error_from_result(result, encoding=encoding)
