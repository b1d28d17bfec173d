"""The scheduler's claim on PostgreSQL sent from the event loop itself: no thread hop.

:mod:`statewf.store.pgclaim` runs the claim's transaction in a thread of the engine's
pool, on psycopg's pipeline: the event loop hands the claim to the thread and waits
for it to hand the answer back, and psycopg's own machinery per statement (its
queries, its generators, its waits) costs more CPU than the server spends on them. A
woken run's claim lies on the path from an event to the run's next step, so here the
same statements, with the same parameters, go from the event loop straight to libpq
(psycopg keeps every connection in libpq's nonblocking mode), in libpq's pipeline
mode, while the loop watches the connection's socket:

1. the candidates' ``SELECT ... FOR UPDATE SKIP LOCKED`` and a flush request: the
   server answers at once and keeps the transaction (an implicit one: no ``BEGIN``
   needed) open with the rows locked;
2. once the caller has decided in Python what to write: one conditional write per
   run, the claimed runs' logs, the next wake-up if asked, and the pipeline's sync,
   which commits (or, after a failed statement, rolls everything back).

A claim given a :class:`~statewf.store.claim_statements.Fold` (a scheduler pass's)
also reads the locked runs' logs in the first round trip (``logs_locked``: the
candidates' select again, which returns the rows this transaction holds and skips
others' locks); each claimed run's log is then those rows and its claim row as
written. When the claim wakes waiting runs, the fold gets them with the transaction
open and the writes on their way, and its rows (the woken runs' waits' results) go
in the second round trip, before the sync: one commit for both. Had a run that came
due between the two reads pushed a locked one out of the second's limit, the logs are
read after the writes instead, with a flush request, and the fold's rows follow in a
third round trip.

The rows stay locked from the select to the commit, as on the thread path, so every
guarantee of that claim holds. The statements are prepared on the connection when it
is opened (in a thread, once); their parameters go as text, as
:mod:`statewf.store.pg_write` sends a step's. A parameter without a text form here
(a NUL in a string, a naive instant) makes :meth:`LoopClaimer.claim` answer None
before anything is written: the caller then claims on the thread path. A connection
that fails, or whose claim is cancelled half-way, is dropped (the server rolls back
what was not committed), and the pools are told as on the thread path.

:func:`claim_blocking` is the same claim made in a thread (``claim_runs``: recovery,
``resume()``, a worker's first pass), on one of the store's kept connections, blocking
on its socket (:mod:`statewf.store.socket_waits`): psycopg's pipeline
(:func:`statewf.store.pgclaim.claim`) stays for a parameter without a text form.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from statewf.errors import ConcurrencyConflict
from statewf.records import ReplayRow
from statewf.store import driver_errors, logrows, pgclaim
from statewf.store.claim_statements import (
    Fold,
    Folded,
    NoTextForm,
    Statement,
    Statements,
    for_tables,
)
from statewf.store.leases import ClaimScope
from statewf.store.pg_write import prepare, text_array
from statewf.store.socket_waits import BlockingWaits, LoopWaits, Waits, run_blocking
from statewf.store.sql import SqlStore

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_FATAL = pq.ExecStatus.FATAL_ERROR
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_IDLE = pq.TransactionStatus.IDLE
_BAD = pq.ConnStatus.BAD
#: This transaction's commit does not wait for the WAL flush (a release's).
_ASYNC_COMMIT = b"SELECT set_config('synchronous_commit', 'off', true)"
T = TypeVar("T")

#: What :meth:`LoopClaimer.claim` answers: the written runs' logs, and the next wake-up.
Answer = tuple[dict[str, list[ReplayRow]], datetime | None]


class _Unwatchable(Exception):
    """The event loop cannot watch sockets (Windows' proactor): the thread path."""


class _Connection:
    """One kept autocommit connection of the store's pool, the claim's statements
    prepared on it, read from the event loop."""

    def __init__(self, raw: PoolProxiedConnection | None, conn: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.pgconn = conn.pgconn
        self.encoding = conn.info.encoding
        self.loader = Transformer(conn)
        self.fd = self.pgconn.socket
        self.closed = False

    @classmethod
    def open(cls, store: SqlStore, statements: Statements) -> _Connection:
        """Check a connection out and prepare the statements on it. Blocking: in a thread."""
        fast = store.fast_path
        assert fast is not None
        raw = fast.engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert isinstance(conn, psycopg.Connection)
            statements.prepare(conn)
            write = store.prepared_write
            if write is not None:  # a fold's rows (:class:`Fold`): the run's one-row write
                prepare(conn, write.name, write.sql)
        except BaseException:
            raw.invalidate()
            raise
        return cls(raw, conn)

    def rows(self, result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        """A result's rows as tuples of Python values (psycopg's loaders, as a cursor's)."""
        self.loader.set_pgresult(result)
        return self.loader.load_rows(0, result.ntuples, tuple)

    def error(self, result: pq.abc.PGresult) -> psycopg.Error:
        """The psycopg error of a failed result."""
        return psycopg.errors.error_from_result(result, encoding=self.encoding)

    def close(self, *, lost: bool = False) -> None:
        """Give the connection back to the pool (``lost``, or not idle: discard it)."""
        if self.closed or self.raw is None:
            return
        self.closed = True
        pgconn = self.pgconn
        if (
            lost
            or pgconn.pipeline_status != pq.PipelineStatus.OFF
            or (pgconn.transaction_status != _IDLE)
        ):
            self.raw.invalidate()
        else:
            self.raw.close()


#: Most connections one claimer keeps: claims and releases on their way at once.
KEEP = 3


class LoopClaimer:
    """Claims and releases of one store sent from the running event loop (PostgreSQL,
    statewf's own pools), each on one of the connections it keeps."""

    def __init__(self, store: SqlStore) -> None:
        if store.fast_path is None:
            raise RuntimeError("LoopClaimer needs PostgreSQL on statewf's own pools")
        self.store = store
        self.statements = for_tables(store.tables)
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(KEEP)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: a loop that cannot watch sockets: its claims take the thread path
        self._unwatchable: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Give the kept connections back (call it when no claim is on its way)."""
        while self._idle:
            self._idle.pop().close()

    async def claim(
        self,
        scope: ClaimScope,
        *,
        due_at: datetime | None,
        limit: int,
        exclude: Collection[str],
        only: str | None,
        decide: Callable[[pgclaim.Found], Sequence[pgclaim.ClaimWrite]],
        next_wake: bool = False,
        light_kind: str | None = None,
        fold: Fold | None = None,
    ) -> Answer | None:
        """:func:`statewf.store.pgclaim.claim`, from the event loop; None (nothing
        written, nothing held) when a parameter needs the thread path.

        ``fold``: once the runs' writes and logs are answered (the transaction open,
        the runs locked), the rows it makes go in the same transaction, committed with
        the claim (a third round trip instead of a commit of their own)."""
        early = light_kind if fold is not None else None
        plan = _plan(self.statements, scope, due_at, limit, exclude, only, next_wake, early)
        if plan is None or plan.idle:
            return None if plan is None else ({}, None)
        try:
            return await self._run(lambda claim: claim.run(plan, decide, light_kind, fold))
        except (NoTextForm, _Unwatchable):
            return None

    async def release(
        self, owner: str, run_ids: Collection[str]
    ) -> list[tuple[str, datetime | None]] | None:
        """Give up ``owner``'s leases on these runs; (id, wake_at) of each released one
        (:func:`statewf.store.leases.release`, in one round trip). None: a NUL in a
        name, which the text protocol cannot carry (the thread path then).

        Committed without waiting for the WAL flush (``synchronous_commit`` off for this
        transaction only): a release lost with a crash of the server leaves the lease to
        run out, which is what a holder that died does; and whoever claims a run after
        the release flushes it with its own commit, which comes later in the WAL.
        """
        if not run_ids:
            return []
        ids = text_array(run_ids)
        release = self.statements.release
        try:
            args = release.args({"ids": ids, "owner": owner})
            return await self._run(lambda claim: claim.release(release, args))
        except (NoTextForm, _Unwatchable):
            return None

    async def _run(self, work: Callable[[_Claim], Awaitable[T]]) -> T:
        """``work`` on a kept connection (opened if none is idle), at most :data:`KEEP`
        at once; a connection that fails is dropped."""
        loop = asyncio.get_running_loop()
        if loop is self._unwatchable:
            raise _Unwatchable()
        if loop is not self._loop:  # an engine used from a new event loop
            self._loop, self._slots = loop, asyncio.Semaphore(KEEP)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._open()
            try:
                result = await work(_Claim(conn, self.statements, LoopWaits(conn.fd)))
            except psycopg.Error as exc:
                lost = _broken(conn, exc)
                conn.close(lost=lost)
                if lost:
                    fast = self.store.fast_path
                    assert fast is not None
                    fast.on_lost()
                if isinstance(
                    exc, (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation)
                ):
                    raise ConcurrencyConflict(
                        "a claimed run changed while it was being claimed; claim again"
                    ) from exc
                raise driver_errors.wrap_driver(exc, self.store.url) from exc
            except NoTextForm:  # raised with the transaction ended: the connection is fine
                self._idle.append(conn)
                raise
            except NotImplementedError:  # add_reader: nothing was sent
                self._unwatchable = loop
                self._idle.append(conn)
                raise _Unwatchable() from None
            except BaseException:
                # cancelled half-way, say: the server rolls back what was not committed
                # when it sees the connection go
                conn.close(lost=True)
                raise
            self._idle.append(conn)
            return result

    async def _open(self) -> _Connection:
        try:
            return await asyncio.to_thread(_Connection.open, self.store, self.statements)
        except psycopg.Error as exc:
            raise driver_errors.wrap_driver(exc, self.store.url) from exc
        except DBAPIError as exc:  # no connection to be had
            raise driver_errors.wrap(
                exc, self.store.url, self.store.tables.transitions.name
            ) from exc


class _Plan(NamedTuple):
    """What one claim sends: whether it locks candidates, its select and the select's
    arguments, the next wake-up's arguments; ``idle``: nothing to claim nor to ask."""

    idle: bool
    lock: bool
    select: Statement
    select_args: list[bytes | None]
    wake: list[bytes | None] | None
    #: the locked runs' logs read with the candidates (a fold's claim), or None
    early: list[bytes | None] | None = None


def _plan(
    built: Statements,
    scope: ClaimScope,
    due_at: datetime | None,
    limit: int,
    exclude: Collection[str],
    only: str | None,
    next_wake: bool,
    early_kind: str | None = None,
) -> _Plan | None:
    """The claim's plan, the same from the loop and from a thread; None when a
    parameter has no text form (the psycopg path then). ``early_kind``: the logs are
    read with the candidates, their rows of that kind light (a fold's claim)."""
    lock = bool(scope.versions) and limit > 0 and bool(scope.executing or scope.due)
    select = built.candidates if only is None else built.candidates_one
    if not scope.versions or (not lock and not next_wake):
        return _Plan(True, False, select, [], None)
    params = pgclaim.candidate_params(scope, due_at, limit, exclude, only)
    try:
        wake = built.next_wake.args(params) if next_wake else None
        early = None
        if early_kind is not None and lock and only is None:
            early = built.logs_locked.args({**params, logrows.LIGHT_KIND: early_kind})
        return _Plan(False, lock, select, select.args(params), wake, early)
    except NoTextForm:
        return None


def claim_blocking(
    store: SqlStore,
    scope: ClaimScope,
    *,
    due_at: datetime | None,
    limit: int,
    exclude: Collection[str],
    only: str | None,
    decide: Callable[[pgclaim.Found], Sequence[pgclaim.ClaimWrite]],
    next_wake: bool = False,
    light_kind: str | None = None,
) -> Answer | None:
    """:func:`statewf.store.pgclaim.claim` in the calling thread: the statements and round
    trips of :meth:`LoopClaimer.claim`, on one of the store's kept connections
    (:class:`~statewf.store.postgres.FastPath`), waiting on its socket. None (nothing
    written, nothing held) when a parameter needs :func:`~statewf.store.pgclaim.claim`."""
    fast = store.fast_path
    if fast is None:
        raise RuntimeError("claim_blocking needs PostgreSQL on statewf's own pools")
    built = for_tables(store.tables)
    plan = _plan(built, scope, due_at, limit, exclude, only, next_wake)
    if plan is None or plan.idle:
        return None if plan is None else ({}, None)

    def work(cur: psycopg.Cursor[Any]) -> Answer | None:
        conn = cur.connection
        built.prepare(conn)
        claim = _Claim(_Connection(None, conn), built, BlockingWaits(conn.pgconn.socket))
        try:
            return run_blocking(claim.run(plan, decide, light_kind))
        except NoTextForm:  # raised with the transaction ended: the connection is fine
            return None
        except BaseException:
            pgconn = conn.pgconn
            if pgconn.pipeline_status != pq.PipelineStatus.OFF or (
                pgconn.transaction_status != _IDLE
            ):
                conn.close()  # never kept half-way through a claim
            raise

    return pgclaim.run_claim(store, work)


def _broken(conn: _Connection, exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.OperationalError) or conn.pgconn.status == _BAD


class _Claim:
    """One claim's round trips on a connection in libpq's pipeline mode: two, or three
    when its logs are read after its writes."""

    def __init__(self, conn: _Connection, built: Statements, waits: Waits) -> None:
        self.conn = conn
        self.built = built
        self.waits = waits

    async def run(
        self,
        plan: _Plan,
        decide: Callable[[pgclaim.Found], Sequence[pgclaim.ClaimWrite]],
        light_kind: str | None,
        fold: Fold | None = None,
    ) -> Answer:
        """Send the claim (its select, writes, logs, the fold's rows) and commit it."""
        lock, select, select_args, wake_args = plan.lock, plan.select, plan.select_args, plan.wake
        pgconn = self.conn.pgconn
        built = self.built
        self.waits.watch()
        try:
            pgconn.enter_pipeline_mode()
            writes: Sequence[pgclaim.ClaimWrite] = ()
            write_args: list[list[bytes | None]] = []
            logs_args: list[bytes | None] = []
            early: dict[str, list[ReplayRow]] | None = None
            if lock:
                # the select, then a flush request: its rows come back, the
                # transaction stays open with them locked
                pgconn.send_query_prepared(select.name, _wire(select_args))
                if plan.early is not None:  # and the locked runs' logs (a fold's claim)
                    pgconn.send_query_prepared(built.logs_locked.name, _wire(plan.early))
                pgconn.send_flush_request()
                answered = await self._results(1 if plan.early is None else 2, sync=False)
                rows = answered[0]
                assert rows is not None
                if plan.early is not None:
                    early = self._logs(answered[1], light_kind)
                locked = pgclaim.found(built.columns, self.conn.rows(rows))
                writes = decide(locked) if locked is not None else ()
                try:
                    write_args = [
                        built.write.args(pgclaim.write_params(built.json_params, write))
                        for write in writes
                    ]
                    ids = text_array(w.snapshot.id for w in writes)
                    if light_kind is None:
                        logs_args = built.logs.args({"ids": ids})
                    else:
                        replay = {"ids": ids, logrows.LIGHT_KIND: light_kind}
                        logs_args = built.logs_replay.args(replay)
                except NoTextForm:
                    await self._results(0, sync=True)  # ends the transaction: nothing written
                    pgconn.exit_pipeline_mode()
                    raise
            for args in write_args:
                pgconn.send_query_prepared(built.write.name, _wire(args))
            read = built.logs if light_kind is None else built.logs_replay
            if fold is not None and not (writes and fold.wants(writes)):
                fold = None
            # the claimed runs' logs: read with the candidates (each then ends with its
            # claim row, as written), or after the writes
            logs = _with_claim_rows(writes, early)
            folded: Sequence[Folded] = ()
            first = 0  # the index of the first folded row's result
            if logs is not None:
                if fold is not None:  # the writes are on their way meanwhile
                    folded = await fold.rows(logs)
                first = len(write_args)
            elif fold is not None:
                # the writes and the logs answered with the transaction still open (a
                # flush request, no sync): the fold's rows join it, then the commit
                pgconn.send_query_prepared(read.name, _wire(logs_args))
                pgconn.send_flush_request()
                answered = await self._results(len(write_args) + 1, sync=False)
                logs = self._logs(answered[-1], light_kind)
                folded = await fold.rows(logs)
            elif writes:
                pgconn.send_query_prepared(read.name, _wire(logs_args))
            for name, args in folded:
                pgconn.send_query_prepared(name, _wire(args))
            if logs is not None:
                count = first + len(folded)
            else:
                count = len(write_args) + (1 if writes else 0)
            if wake_args is not None:
                pgconn.send_query_prepared(built.next_wake.name, _wire(wake_args))
                count += 1
            # the writes, the reads after them, the fold's rows and the commit
            results = await self._results(count, sync=True)
            pgconn.exit_pipeline_mode()
        finally:
            self.waits.unwatch()
        wake = None
        if wake_args is not None:
            last = results[-1]
            assert last is not None
            wake = pgclaim.utc(self.conn.rows(last)[0][0])
        if fold is not None:
            mine = results[first : first + len(folded)]
            fold.committed([r.ntuples if r is not None else 0 for r in mine])
        if logs is not None:
            return logs, wake
        if not writes:
            return {}, wake
        return self._logs(results[len(write_args)], light_kind), wake

    def _logs(
        self, result: pq.abc.PGresult | None, light_kind: str | None
    ) -> dict[str, list[ReplayRow]]:
        assert result is not None
        return pgclaim.logs_by_run(self.conn.rows(result), light_kind)

    async def release(
        self, release: Statement, args: list[bytes | None]
    ) -> list[tuple[str, datetime | None]]:
        """The release's one round trip: its commit not waiting for the WAL flush."""
        pgconn = self.conn.pgconn
        self.waits.watch()
        try:
            pgconn.enter_pipeline_mode()
            pgconn.send_query_params(_ASYNC_COMMIT, None)
            pgconn.send_query_prepared(release.name, _wire(args))
            _, rows = await self._results(2, sync=True)
            pgconn.exit_pipeline_mode()
        finally:
            self.waits.unwatch()
        assert rows is not None
        return [(str(i), pgclaim.utc(w)) for i, w in self.conn.rows(rows)]

    async def _flush(self) -> None:
        pgconn = self.conn.pgconn
        while pgconn.flush():  # more to send than the socket took at once
            await self.waits.writable()

    async def _results(self, commands: int, *, sync: bool) -> list[pq.abc.PGresult | None]:
        """Send what is queued (with a sync: commit), then read ``commands`` results
        (each command's first); raise the first failed one's error, after the sync."""
        pgconn = self.conn.pgconn
        if sync:
            pgconn.pipeline_sync()
        await self._flush()
        results: list[pq.abc.PGresult | None] = []
        current: pq.abc.PGresult | None = None
        error: psycopg.Error | None = None
        synced = not sync
        while len(results) < commands or not synced:
            if pgconn.is_busy():
                await self.waits.readable()
                pgconn.consume_input()
                if pgconn.status == _BAD:
                    raise psycopg.OperationalError("the connection to the server was lost")
                continue
            result = pgconn.get_result()
            if result is None:  # the end of one command's results
                results.append(current)
                current = None
            elif result.status == _SYNC:
                synced = True
            else:
                if result.status == _FATAL and error is None:
                    error = self.conn.error(result)
                if current is None:
                    current = result
        if error is not None:
            if sync:
                pgconn.exit_pipeline_mode()
            raise error
        return results


def _with_claim_rows(
    writes: Sequence[pgclaim.ClaimWrite], early: dict[str, list[ReplayRow]] | None
) -> dict[str, list[ReplayRow]] | None:
    """The claimed runs' logs from those read with the candidates, each with its claim
    row appended; None if none were read, or one of the runs is missing (a run that
    came due between the two reads took its place in the second's limit)."""
    if early is None or not writes:
        return None
    logs: dict[str, list[ReplayRow]] = {}
    for write in writes:
        if write.lease_owner is None:
            continue  # a dead letter: nobody replays it
        rows = early.get(write.snapshot.id)
        if rows is None:
            return None
        logs[write.snapshot.id] = [*rows, write.record]
    return logs


def _wire(args: list[bytes | None]) -> Sequence[bytes]:
    # libpq takes None for a NULL (psycopg's own calls pass it; its stubs say bytes)
    return cast("Sequence[bytes]", args)
