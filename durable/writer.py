"""Writing a run's log: one row at a time, each with the snapshot it implies.

Every write builds the next :class:`~statewf.records.TransitionRecord` on top of
the snapshot the executor last saw and applies it with :func:`statewf.fold.apply`.
On PostgreSQL a plain row is one conditional statement (``write_if_version``);
a transactional step's row shares a transaction with the step's own writes. When
another writer appended first, the executor reloads and tries again on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from durable.records import PAUSED, TERMINAL
from durable.signals import Stop
from statewf.clock import Clock
from statewf.errors import ConcurrencyConflict
from statewf.fold import apply
from statewf.records import Instance, TransitionRecord
from statewf.store import SqlStore, Tx

T = TypeVar("T")

#: How often a write is retried after another writer appended to the run first.
_MAX_CONFLICTS = 20


@dataclass
class RunHost:
    """What an executor needs from its engine: the store, the clock, threads, limits."""

    store: SqlStore
    clock: Clock
    max_bytes: int
    rand: Callable[[], float]
    executor: Executor | None = None

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in the engine's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class RunWriter:
    """The write side of a run's executor: its snapshot and a serialized writer."""

    def __init__(self, host: RunHost, snapshot: Instance) -> None:
        self.host = host
        self.snapshot = snapshot
        self.finished = snapshot.status in TERMINAL
        self.cancelled = False
        #: Stop executing when a reload finds the run paused from outside.
        self.stop_when_paused = True
        #: A suspension row was written: later rows keep the run's waiting status.
        self.suspending = False
        self._write_lock = asyncio.Lock()

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.snapshot.id

    async def write(
        self,
        make: Callable[[Tx | None, Instance], dict[str, Any]],
        *,
        final: bool = False,
        needs_tx: bool = False,
        retry: bool = True,
    ) -> None:
        """Append one row built by ``make`` (inside the transaction) and update the snapshot.

        Rows are written one at a time per run. When another writer appended first
        (a cancel, say), the snapshot is reloaded: a finished run raises :class:`Stop`,
        otherwise the write is tried again on top of the new rows.
        """
        async with self._write_lock:
            for _ in range(_MAX_CONFLICTS):
                if self.finished:
                    raise Stop()
                try:
                    self.snapshot = await self.host.db(self._write_sync, make, needs_tx)
                except ConcurrencyConflict:
                    await self._reload()
                    if not retry:
                        raise
                    continue
                if final:
                    self.finished = True
                return
            raise ConcurrencyConflict(
                f"run {self.run_id!r} kept changing under its executor; giving up this write",
                instance_id=self.run_id,
            )

    def _write_sync(
        self, make: Callable[[Tx | None, Instance], dict[str, Any]], needs_tx: bool
    ) -> Instance:
        snap = self.snapshot
        store = self.host.store
        if not needs_tx and store.conditional_writes:
            # PostgreSQL: the snapshot update and the log row in one autocommitted
            # statement that applies only if the run is still at snap.version.
            record, new = self._next(snap, make(None, snap))
            if not store.write_if_version(new, record, snap.version):
                raise ConcurrencyConflict(
                    f"run {snap.id!r} moved past version {snap.version}", instance_id=snap.id
                )
            return new
        with store.transaction() as tx:
            record, new = self._next(snap, make(tx, snap))
            tx.update_instance(new, snap.version)
            tx.append([record])
        return new

    def _next(self, snap: Instance, fields: dict[str, Any]) -> tuple[TransitionRecord, Instance]:
        record = TransitionRecord(
            instance_id=snap.id,
            seq=snap.version + 1,
            source=snap.configuration,
            created_at=self.host.clock.now(),
            **fields,
        )
        return record, apply(snap, record)

    async def _reload(self) -> None:
        known = self.snapshot.version

        def load() -> tuple[Instance | None, list[TransitionRecord]]:
            with self.host.store.transaction() as tx:
                return tx.get_instance(self.run_id), tx.log(self.run_id, after=known)

        snap, tail = await self.host.db(load)
        if snap is None or snap.status in TERMINAL:
            self.finished = True
            self.cancelled = snap is not None and snap.status == "cancelled"
            raise Stop()
        self.snapshot = snap
        self.absorb(tail)
        if snap.status == PAUSED and self.stop_when_paused:
            raise Stop()

    def absorb(self, records: list[TransitionRecord]) -> None:
        """Learn of rows another writer appended (events, operator actions)."""
        return
