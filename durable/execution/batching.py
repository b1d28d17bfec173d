"""Shared commits: the step rows of runs executing at once, written together.

Each run writes one row at a time (its writer's lock), and its next step starts only
after that row is committed. Across runs nothing orders the writes, so rows that are
ready while an earlier batch is on its way to the database wait for it to return and
then go together, in one transaction (:func:`statewf.store.batched.write_rows`). A row
that finds nothing in flight goes at once: one run alone waits for nothing, and under
load the batches grow by themselves, with no timer deciding when to flush.

On PostgreSQL a batch is sent from the event loop itself, on a connection of the
batcher's own (:class:`~statewf.store.loop_writes.LoopConnection`, one per batch in
flight): no thread is woken and none wakes the loop, and other runs go on while the
answer travels. Elsewhere (SQLite, an application's own engine), and for the rare
rows the loop path leaves to it, the batcher's threads write the batch.

Each writer gets its own row's outcome; a batch changes how rows reach the database,
not what any writer learns from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from functools import partial

from statewf.store import SqlStore
from statewf.store.batched import (
    Outcome,
    Row,
    loop_args,
    loop_outcomes,
    loop_row_args,
    loop_statements,
    loop_writable,
    write_rows,
)
from statewf.store.loop_writes import TUPLES_OK, LoopConnection, Result, failure

#: Rows per shared commit at most.
MAX_ROWS = 64

#: Batches on their way to the database at once (each on a connection of its own).
MAX_IN_FLIGHT = 2

_Batch = list[tuple[Row, "asyncio.Future[bool]"]]
#: A thread's work: a batch to write, or a loop connection to open (``None``: stop).
_Work = tuple[asyncio.AbstractEventLoop, _Batch | None]


class RowBatcher:
    """Collects conditional writes of distinct runs and commits them in batches.

    Its own threads (one per batch in flight) take the batches that do not go from the
    loop: handing work to a dedicated thread and its result back with one
    ``call_soon_threadsafe`` costs about half the CPU of a thread-pool future chained
    to the event loop (measured: 93-115 vs 174-187 us per one-row write); sending it
    from the loop costs less again (see docs/performance.md).
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        max_rows: int = MAX_ROWS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self._waiting: _Batch = []
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # the loop connections: all of them, the idle ones, one being opened
        self._conns: list[LoopConnection] = []
        self._idle: list[LoopConnection] = []
        self._opening = False
        self._statements: dict[bytes, bytes] | None = None
        self._unwatchable: asyncio.AbstractEventLoop | None = None
        self._statements_out: set[asyncio.Future[tuple[Result | None, BaseException | None]]] = (
            set()
        )
        #: the next row of these runs goes to their hold first (a claim writing it in its
        #: own transaction: :mod:`durable.execution.folding`); None: it comes here after all
        self.held: dict[str, Callable[[Row], Awaitable[Outcome | None]]] = {}
        #: rows written and batches sent (for benchmarks and tests)
        self.rows = 0
        self.batches = 0
        #: batches sent from the event loop (the rest went through a thread)
        self.loop_batches = 0

    @property
    def connections(self) -> tuple[LoopConnection, ...]:
        """The loop connections open now (for tests and benchmarks)."""
        return tuple(self._conns)

    def write(self, row: Row) -> Awaitable[bool]:
        """Write ``row`` in the next batch: await the answer, True if written, False if its
        run had moved (the row's error is raised). Unless its run's row is held (a
        claim writes it), a future, not a coroutine: its writer awaits it directly, with
        no frame of the batcher's in between."""
        if self.held:
            hold = self.held.pop(row.snapshot.id, None)
            if hold is not None:
                return self._write_held(hold, row)
        return self._enqueue(row)

    async def _write_held(self, hold: Callable[[Row], Awaitable[Outcome | None]], row: Row) -> bool:
        """``row`` to its run's hold first; to the next batch if the hold gives it back."""
        held = await hold(row)
        if held is None:
            return await self._enqueue(row)
        if isinstance(held, BaseException):
            raise held
        return held

    def _enqueue(self, row: Row) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (an engine reopened): start afresh
            self._drop_connections()
            self._loop, self._waiting, self._in_flight = loop, [], 0
        done: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((row, done))
        if self._in_flight < self.max_in_flight:
            self._send(loop)
        return done

    async def statement(
        self, name: bytes, args: list[bytes | None]
    ) -> tuple[Result | None, BaseException | None] | None:
        """Run one prepared statement of the loop connections (``name``) on an idle one, from
        the loop: its result (whatever its status), or the error of the connection lost
        under it (it may have committed); None if no loop connection is free (the caller
        then takes its thread path)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop_connections()
            self._loop, self._waiting, self._in_flight = loop, [], 0
        if self._in_flight >= self.max_in_flight:
            return None
        conn = self._connection(loop)
        if conn is None:
            return None
        self._in_flight += 1
        done: asyncio.Future[tuple[Result | None, BaseException | None]] = loop.create_future()

        def answer(result: Result | None, error: BaseException | None) -> None:
            self._in_flight -= 1
            if conn.broken:
                self._forget(conn)
                fast = self.store.fast_path
                if fast is not None:
                    fast.on_lost()
            elif result is None or failure(result, conn.encoding) is not None:
                conn.close()  # refused (or it forgot its statements): a fresh one next time
                self._forget(conn)
            else:
                self._idle.append(conn)
            if not done.done():
                done.set_result((result, error))
            if self._waiting and self._in_flight < self.max_in_flight and loop is self._loop:
                self._send(loop)

        self._statements_out.add(done)
        done.add_done_callback(self._statements_out.discard)
        conn.execute(name, args, answer)
        return await done

    def close(self) -> None:
        """Give back the loop connections (in the loop's thread) and stop the threads
        once the batches in flight are written."""
        self._drop_connections()
        self._loop = None
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout=30)

    def _drop_connections(self) -> None:
        conns, self._conns, self._idle = self._conns, [], []
        for conn in conns:
            conn.close()
        # a statement on its way is not answered by a connection closed under it
        out, self._statements_out = self._statements_out, set()
        for done in out:
            if not done.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed already
                    done.set_result((None, ConnectionError("closed with the engine")))

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._waiting
        if len(batch) <= self.max_rows:  # all of them (one, alone): no copy
            self._waiting = []
        else:
            batch = batch[: self.max_rows]
            del self._waiting[: self.max_rows]
        self._in_flight += 1
        self.rows += len(batch)
        self.batches += 1
        conn = self._connection(loop)
        if conn is not None:
            if len(batch) == 1:
                sent = loop_row_args(self.store, batch[0][0])
            else:
                sent = loop_args(self.store, [row for row, _ in batch])
            if sent is not None:
                self.loop_batches += 1
                # the answer comes back to _answered (a partial: no Python frame between)
                conn.execute(sent[0], sent[1], partial(self._answered, loop, conn, batch))
                return
            self._idle.append(conn)
        self._to_thread(loop, batch)

    def _connection(self, loop: asyncio.AbstractEventLoop) -> LoopConnection | None:
        """An idle loop connection, or None (and one is opened if there may be more)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken:
                return conn
            self._forget(conn)  # it failed while idle (the server closed it)
        if not self._opening and len(self._conns) < self.max_in_flight:
            if loop is self._unwatchable or not loop_writable(self.store):
                return None
            if self._statements is None:
                self._statements = loop_statements(self.store)
            self._opening = True
            self._to_thread(loop, None)
        return None

    def _to_thread(self, loop: asyncio.AbstractEventLoop, batch: _Batch | None) -> None:
        self._start_threads()
        self._queue.put((loop, batch))

    def _answered(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: LoopConnection,
        batch: _Batch,
        result: Result | None,
        error: BaseException | None,
    ) -> None:
        if len(batch) == 1 and result is not None and result.status == TUPLES_OK:
            outcomes: list[Outcome] | None = [result.ntuples > 0]  # loop_outcomes' commonest
        else:
            outcomes = loop_outcomes(
                self.store, [row for row, _ in batch], result, error, conn.encoding
            )
        if conn.broken:  # the connection failed: the server restarted, say
            self._forget(conn)
            fast = self.store.fast_path
            if fast is not None:
                fast.on_lost()  # the pools' connections are as dead: start afresh
        elif outcomes is None:
            conn.close()  # refused, or it forgot its statements: a fresh one next time
            self._forget(conn)
        else:
            self._idle.append(conn)
        if outcomes is None:
            self._to_thread(loop, batch)
        else:
            self._landed(loop, batch, outcomes, None)

    def _forget(self, conn: LoopConnection) -> None:
        with contextlib.suppress(ValueError):
            self._conns.remove(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _start_threads(self) -> None:
        if len(self._threads) >= self.max_in_flight:
            return
        with self._lock:
            while len(self._threads) < self.max_in_flight:
                thread = threading.Thread(target=self._work, name="durable-rows", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, batch = item
            if batch is None:
                self._open(loop)
                continue
            outcomes: list[Outcome] | None = None
            error: BaseException | None = None
            try:
                outcomes = write_rows(self.store, [row for row, _ in batch])
            except BaseException as exc:  # handed to every writer of the batch
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(self._landed, loop, batch, outcomes, error)

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open a loop connection (in a thread) and hand it to the loop."""
        conn: LoopConnection | None = None
        fast = self.store.fast_path
        if fast is not None and self._statements is not None:
            # a failure here is the database's: the next batch finds it (thread path)
            with contextlib.suppress(Exception):
                conn = LoopConnection.open(fast, self._statements)
        try:
            loop.call_soon_threadsafe(self._opened, loop, conn)
        except RuntimeError:  # the loop was closed meanwhile
            if conn is not None:
                conn.close()

    def _opened(self, loop: asyncio.AbstractEventLoop, conn: LoopConnection | None) -> None:
        self._opening = False
        if conn is None:
            return
        if loop is not self._loop:  # closed, or another loop since
            conn.close()
            return
        try:
            conn.attach(loop)
        except NotImplementedError:  # a loop that cannot watch sockets (Windows' proactor)
            conn.close()
            self._unwatchable = loop
            return
        self._conns.append(conn)
        self._idle.append(conn)
        if self._waiting and self._in_flight < self.max_in_flight:
            self._send(loop)

    def _landed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: _Batch,
        outcomes: list[Outcome] | None,
        error: BaseException | None,
    ) -> None:
        self._in_flight -= 1
        for i, (_, done) in enumerate(batch):
            if done.done():
                continue  # its writer was cancelled meanwhile
            if outcomes is None:
                done.set_exception(error or RuntimeError("batch lost"))
            elif isinstance(outcome := outcomes[i], BaseException):
                done.set_exception(outcome)  # raised in its writer
            else:
                done.set_result(outcome)
        if self._waiting and self._in_flight < self.max_in_flight and loop is self._loop:
            self._send(loop)
