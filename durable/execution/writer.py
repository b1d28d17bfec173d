"""Writing a run's log: one row at a time, each with the snapshot it implies.

Every write builds the next :class:`~statewf.records.TransitionRecord` on top of
the snapshot the executor last saw and applies it with :func:`statewf.fold.apply`.
On PostgreSQL a plain row is one conditional statement (``write_if_version``);
a transactional step's row shares a transaction with the step's own writes. When
another writer appended first, the executor reloads and tries again on top.

Three rules keep the log one story, whatever else writes to the run:

- A step's outcome is appended at most once per position. If a reload shows that
  another executor of the same run already recorded the position, this executor
  appends nothing and stops (:class:`~durable.authoring.signals.Stop`); the log's result is
  the one every replay returns.
- A pause from outside does not discard a finished step: its row is still
  appended (the run stays ``paused``), and the executor stops before the next step.
- A database error on the engine's own write is retried with a short backoff; if
  it persists, the execution stops with :class:`LogWriteFailed` (never seen by
  ``except Exception`` in workflow code) and the run stays in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from durable.authoring.signals import Stop, WorkflowSignal
from durable.control.start import committed_start, insert_run
from durable.execution.batching import RowBatcher
from durable.execution.lifecycle import Lifecycle, Mode, Phase
from durable.log.records import KIND_STEP, KIND_STEP_FAILED, PAUSED, TERMINAL
from statewf.appending import Move, append, next_row
from statewf.clock import Clock
from statewf.errors import ConcurrencyConflict, DuplicateInstance, StoreError
from statewf.records import Instance, TransitionRecord
from statewf.store import SqlStore, Tx, pg_start
from statewf.store.batched import Row, loop_writable
from statewf.store.leases import Lease, lease_of

log = logging.getLogger("durable")
T = TypeVar("T")

#: How often a write is retried after another writer appended to the run first.
_MAX_CONFLICTS = 20

#: Real seconds before each new try of a write that failed with a database error:
#: five tries over about four seconds. Real time, like the scheduler's retries: a
#: database comes back in real time, whatever a test's manual clock says.
_STORE_BACKOFF = (0.1, 0.4, 1.0, 2.5)


class LogWriteFailed(WorkflowSignal):
    """The engine could not write the run's log (the database kept failing).

    Not a step failure: nothing is recorded, the execution stops and the run stays
    in progress, to be resumed by recovery. Derives from ``BaseException`` like the
    other signals, so ``except Exception`` in workflow code cannot swallow it.
    """

    def __init__(self, run_id: str, error: StoreError) -> None:
        super().__init__(f"could not write the log of run {run_id!r}: {error.message}")
        self.error = error


class _PositionTaken(Exception):
    """Raised in the database thread: the log already holds this row's step position."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position


def _marker(fields: dict[str, Any]) -> Callable[[Tx | None, Instance], dict[str, Any]]:
    """A patch row's fields on top of a snapshot: the run keeps its status and wake-up."""
    return lambda _tx, snap: {**fields, "status": snap.status, "wake_at": snap.wake_at}


@dataclass
class RunHost:
    """What an executor needs from its engine: the store, the clock, threads, limits."""

    store: SqlStore
    clock: Clock
    max_bytes: int
    rand: Callable[[], float]
    executor: Executor | None = None
    #: what :func:`durable.credentials` returns in runs executed here (never logged)
    credentials: Any = field(default=None, repr=False)
    _batcher: RowBatcher | None = field(default=None, init=False, repr=False)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in the engine's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def batcher(self) -> RowBatcher:
        """The shared-commit writer of this host's runs (:mod:`durable.execution.batching`)."""
        if self._batcher is None:
            self._batcher = RowBatcher(self.store)
        return self._batcher

    async def insert_run(
        self,
        snapshot: Instance,
        record: TransitionRecord,
        columns: dict[str, Any],
        lease_for: timedelta,
    ) -> tuple[bool, Instance | None, datetime | None]:
        """:func:`~durable.control.start.insert_run` for a run that executes here (leased
        for ``lease_for``, no NOTIFY): one statement from the event loop on PostgreSQL
        (:mod:`statewf.store.pg_start`), else (and when that finds the id or key taken:
        the first run, or :class:`DuplicateInstance`) the transaction, in a thread."""
        store = self.store
        if loop_writable(store) and "transaction" not in vars(store):
            args = pg_start.start_args(store, snapshot, record, columns, lease_for)
            answer = None
            if args is not None:
                answer = await self.batcher.statement(pg_start.START_STATEMENT, args)
            if answer is not None:
                try:
                    until = pg_start.started(store, *answer)
                except StoreError:
                    # the connection went under the statement: committed or not? The
                    # row says (read on another connection); not there: start it anew
                    return await self._start_again(snapshot, record, columns, lease_for)
                if until is not None:
                    return True, None, until
                if pg_start.refused(answer[0]):  # it may have committed all the same
                    return await self._start_again(snapshot, record, columns, lease_for)
        return await self.db(insert_run, store, snapshot, record, columns, False, lease_for)

    async def _start_again(
        self,
        snapshot: Instance,
        record: TransitionRecord,
        columns: dict[str, Any],
        lease_for: timedelta,
    ) -> tuple[bool, Instance | None, datetime | None]:
        """A start whose statement's connection was lost: started if its row is there,
        leased as it leased it; else the transaction's path, which may find the lost
        statement committed after all (the same check then)."""
        store = self.store
        until = await self.db(committed_start, store, snapshot.id, columns)
        if until is not None:
            return True, None, until
        taken: DuplicateInstance | None = None
        try:
            answer = await self.db(insert_run, store, snapshot, record, columns, False, lease_for)
        except DuplicateInstance as exc:
            answer, taken = None, exc
        if answer is not None and (answer[1] is None or answer[1].id != snapshot.id):
            return answer  # inserted now, or another run holds the key
        # the lost statement committed after all (the insert waited for it)
        until = await self.db(committed_start, store, snapshot.id, columns)
        if until is not None:
            return True, None, until
        if taken is not None:
            raise taken
        assert answer is not None
        return answer

    def close(self) -> None:
        """Stop the shared-commit writer's threads (after the last write)."""
        if self._batcher is not None:
            self._batcher.close()


class RunWriter:
    """The write side of a run's executor: its snapshot and a serialized writer."""

    def __init__(self, host: RunHost, snapshot: Instance) -> None:
        self.host = host
        self.snapshot = snapshot
        #: the phase of this execution and its modes (:mod:`durable.execution.lifecycle`)
        self.life = Lifecycle(finished=snapshot.status in TERMINAL)
        #: Set once a write gave up on database errors; later writes raise it again.
        self.write_failed: LogWriteFailed | None = None
        #: The lease this execution holds (from a claim), or None for an unleased
        #: execution. A reload that finds another lease stops it: fencing.
        self.lease: Lease | None = None
        #: The final row gave up the lease (nothing left to release).
        self.released = False
        #: The snapshot this execution's final row committed (the run as it ended here).
        self.ended_with: Instance | None = None
        self._releasing = False
        self._write_lock = asyncio.Lock()
        self._tried: dict[str, Any] | None = None
        self._in_make = False
        self._tail: list[TransitionRecord] = []
        #: the rows this execution appended, in order
        self.written: list[TransitionRecord] = []
        #: patch rows to append before the next row (``ctx.patched`` cannot await)
        self.markers: list[dict[str, Any]] = []

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.snapshot.id

    @property
    def cancelled(self) -> bool:
        """Whether the run was cancelled (this execution stops without an error)."""
        return self.life.phase is Phase.CANCELLED

    @property
    def suspending(self) -> bool:
        """Whether a suspension row was written: later rows keep the run's waiting status."""
        return bool(self.life.modes) and self.life.has(Mode.SUSPENDING)  # none: no call

    @property
    def holding_back(self) -> bool:
        """Whether no new step attempt may start (paused from outside, or draining)."""
        modes = self.life.modes
        return bool(modes) and (self.life.has(Mode.PAUSING) or self.life.has(Mode.DRAINING))

    def suspend(self) -> None:
        """A suspension row was written."""
        self.life.take(Mode.SUSPENDING)

    def drain(self) -> None:
        """The worker is stopping: finish the step under way, start no other (recorded
        outcomes still go in); the run is left in progress for another worker."""
        self.life.take(Mode.DRAINING)

    def cancel(self) -> None:
        """The run was cancelled: nothing more is written."""
        self.life.move(Phase.CANCELLED)

    def finish(self) -> None:
        """Write nothing more (the run is finished, or this executor only replays)."""
        self.life.end(Phase.FINISHED)

    def recorded(self, position: int) -> bool:
        """Whether the log (as last read) holds the outcome of the step at ``position``."""
        return False

    async def write(
        self,
        make: Callable[[Tx | None, Instance], dict[str, Any]],
        *,
        final: bool = False,
        needs_tx: bool = False,
        retry: bool = True,
        position: int | None = None,
    ) -> None:
        """Append one row built by ``make`` (inside the transaction) and update the snapshot.

        Rows are written one at a time per run. When another writer appended first
        (a cancel, say), the snapshot is reloaded: a finished run raises :class:`Stop`,
        otherwise the write is tried again on top of the new rows.

        ``position`` marks a row recording an attempt at (or the outcome of) the step
        at that position. Such a row is still appended when the run was paused from
        outside meanwhile; it is never appended when the log already holds that
        position's outcome (this execution then stops with :class:`Stop`).

        A ``StoreError`` is retried with a short backoff (real time); if it persists it
        is raised, as :class:`LogWriteFailed` while the workflow runs.
        """
        lock = self._write_lock
        await lock.acquire()  # free (one step at a time): no wait, no loop turn
        try:
            while self.markers:  # ahead of any later row: a replay finds the answer first
                await self._write_locked(_marker(self.markers[0]), False, False, True, position)
                self.markers.pop(0)
            await self._write_locked(make, final, needs_tx, retry, position)
        finally:
            lock.release()

    async def _write_locked(
        self,
        make: Callable[[Tx | None, Instance], dict[str, Any]],
        final: bool,
        needs_tx: bool,
        retry: bool,
        position: int | None,
    ) -> None:
        conflicts = 0
        failures = 0
        stale = False
        self._tried = None
        while True:
            self._check_may_write(position)
            try:
                if stale:
                    await self._reload()
                    stale = False
                    if failures and self._tried is not None and self._landed(self._tried):
                        # the failed try had committed after all: it is in the log
                        self._tried = None
                        self._after_write(final)
                        return
                    self._check_may_write(position)
                # a final row also gives up the lease, in the same statement
                self._releasing = final and self.lease is not None
                self.snapshot = await self._write_once(make, needs_tx)
            except ConcurrencyConflict:
                if self._in_make:
                    raise  # the step's own code (its SQL, its own statewf call)
                conflicts += 1
                stale = True
                if not retry:
                    # the caller decides again on what it learns here; a database
                    # error on this read surfaces at its next write, retried there
                    with contextlib.suppress(StoreError):
                        await self._reload()
                    raise
                if conflicts >= _MAX_CONFLICTS:
                    raise ConcurrencyConflict(
                        f"run {self.run_id!r} kept changing under its executor; "
                        "giving up this write",
                        instance_id=self.run_id,
                    ) from None
                continue
            except _PositionTaken as taken:
                self._superseded(taken.position)
            except StoreError as exc:
                if self._in_make or not exc.transient:
                    # raised by the step's own code in its transaction, or the
                    # database refused the row: trying again cannot help
                    raise
                if failures >= len(_STORE_BACKOFF):
                    self._give_up(exc, failures + 1)
                delay = _STORE_BACKOFF[failures]
                failures += 1
                stale = True  # the failed try may have committed: look before trying again
                log.warning(
                    "run %s: writing its log failed (%s); try %s of %s in %ss",
                    self.run_id,
                    exc.message,
                    failures + 1,
                    len(_STORE_BACKOFF) + 1,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._tried = None
            if final:  # (a step's row: nothing more to do)
                self._after_write(final)
            return

    def _check_may_write(self, position: int | None) -> None:
        if self.write_failed is not None:
            raise LogWriteFailed(self.run_id, self.write_failed.error)
        if self.life.ended:
            raise Stop()
        if position is None and self.life.modes and self.life.has(Mode.PAUSING):
            raise Stop()  # paused from outside: only a finished step's row goes in
        if position is not None and self.recorded(position):
            self._superseded(position)

    def _superseded(self, position: int | None) -> None:
        self.life.end(Phase.STOPPED)
        log.warning(
            "run %s: step position %s was recorded by another execution of the run; "
            "this execution stops and leaves the run to it",
            self.run_id,
            position,
        )
        raise Stop()

    def _give_up(self, exc: StoreError, tries: int) -> None:
        log.error(
            "run %s: could not write its log after %s tries (%s); this execution stops "
            "and the run stays in progress, to be resumed by recovery",
            self.run_id,
            tries,
            exc.message,
        )
        if self.life.phase is Phase.READY:
            raise exc  # not from the workflow function: the caller sees the StoreError
        self.life.move(Phase.WRITE_FAILED)
        self.write_failed = LogWriteFailed(self.run_id, exc)
        raise self.write_failed from exc

    def _after_write(self, final: bool) -> None:
        if final:
            self.life.move(Phase.FINISHED)
            self.released = self._releasing
            self.ended_with = self.snapshot

    def _landed(self, fields: dict[str, Any]) -> bool:
        """Whether the rows read by the last reload include the row built as ``fields``."""
        for record in self._tail:
            if (
                record.kind == fields.get("kind")
                and record.key == fields.get("key")
                and record.payload == fields.get("payload")
                and record.meta == fields.get("meta", {})
            ):
                self.written.append(record)
                return True
        return False

    async def _write_once(
        self, make: Callable[[Tx | None, Instance], dict[str, Any]], needs_tx: bool
    ) -> Instance:
        snap = self.snapshot
        self._in_make = False
        if not needs_tx and self.host.store.conditional_writes:
            # PostgreSQL: the snapshot update and the log row in one statement that
            # applies only if the run is still at snap.version, committed together
            # with the rows other runs have ready at the same moment
            record, new = self._build(make, None, snap)
            row = Row(new, record, snap.version, self._releasing, snap)
            if not await self.host.batcher.write(row):
                raise ConcurrencyConflict(
                    f"run {snap.id!r} moved past version {snap.version}", instance_id=snap.id
                )
            self.written.append(record)
            return new
        return await self.host.db(self._write_in_tx, make, snap)

    def _write_in_tx(
        self, make: Callable[[Tx | None, Instance], dict[str, Any]], snap: Instance
    ) -> Instance:
        with self.host.store.transaction() as tx:
            record, new = self._build(make, tx, snap)
            released = {"lease_owner": None, "lease_expires_at": None} if self._releasing else {}
            append(tx, [record], Move(new, snap.version, released))
        self.written.append(record)
        return new

    def _build(
        self, make: Callable[[Tx | None, Instance], dict[str, Any]], tx: Tx | None, snap: Instance
    ) -> tuple[TransitionRecord, Instance]:
        # An error raised while ``make`` runs is the step's (a transactional step's own
        # SQL), not the engine's write: flag it so it is not retried as one.
        self._in_make = True
        fields = make(tx, snap)
        self._in_make = False
        return self._next(snap, fields)

    def _next(self, snap: Instance, fields: dict[str, Any]) -> tuple[TransitionRecord, Instance]:
        meta = fields.get("meta") or {}
        if (
            fields.get("kind") in (KIND_STEP, KIND_STEP_FAILED)
            and "position" in meta
            and self.recorded(int(meta["position"]))
        ):
            raise _PositionTaken(int(meta["position"]))
        self._tried = fields
        return next_row(snap, self.host.clock.now(), **fields)

    async def _reload(self) -> None:
        known = self.snapshot.version

        def load() -> tuple[Instance | None, list[TransitionRecord], Lease | None]:
            with self.host.store.transaction() as tx:
                snap = tx.get_instance(self.run_id)
                return snap, tx.log(self.run_id, after=known), lease_of(tx, self.run_id)

        snap, tail, lease = await self.host.db(load)
        if self.lease is not None and (
            lease is None or (lease.owner, lease.epoch) != (self.lease.owner, self.lease.epoch)
        ):
            self.lose_lease(lease)
            raise Stop()
        if snap is None or snap.status in TERMINAL:
            cancelled = snap is not None and snap.status == "cancelled"
            self.life.move(Phase.CANCELLED if cancelled else Phase.FINISHED)
            raise Stop()
        self.snapshot = snap
        self._tail = tail
        self.absorb(tail)
        if snap.status == PAUSED:
            self.life.take(Mode.PAUSING)

    def lose_lease(self, current: Lease | None = None) -> None:
        """Mark this execution stopped for good: its lease ended or another worker took the run.

        Every later write raises :class:`Stop`; the caller stops the task if it must.
        """
        self.life.end(Phase.STOPPED)
        holder = f"worker {current.owner} (epoch {current.epoch})" if current else "nobody"
        mine = self.lease
        log.warning(
            "run %s: this execution lost its lease (epoch %s); the run is now held by %s, "
            "so nothing more is written here",
            self.run_id,
            mine.epoch if mine else None,
            holder,
        )

    def absorb(self, records: list[TransitionRecord]) -> None:
        """Learn of rows another writer appended (events, operator actions)."""
        return
