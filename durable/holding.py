"""The leases an engine holds on the runs it executes: claiming, heart-beating, releasing.

:class:`LeaseHolder` is mixed into :class:`~durable.WorkflowEngine` (and so into
:class:`~durable.Worker`). Every run an engine executes is held under a lease:
runs it starts itself are inserted already leased, others are claimed
(:mod:`durable.leases`). A heartbeat task extends the leases every third of the
lease; a run whose lease could not be extended (another worker took it over after
this process stalled) is stopped at once. A run that waits or ends is released,
and :meth:`close` releases every run still held, so another engine takes them up
without waiting for the leases to run out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from durable.leases import ClaimedRun, Claimer, Limits, claim
from durable.runner import RunExecutor
from durable.scheduling import stop_task
from durable.writer import RunHost
from statewf.errors import StatewfError
from statewf.store import Tx
from statewf.store.leases import (
    ClaimScope,
    db_now,
    expire_all,
    extend,
    release,
    release_all,
)

log = logging.getLogger("durable")

#: Most runs one claim transaction takes.
_CLAIM_BATCH = 100


def new_worker_id() -> str:
    """A unique id for one engine or worker process: host, pid and a random part."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseHolder:
    """Claims, heartbeats and releases of the runs an engine executes (a mixin)."""

    host: RunHost
    worker_id: str
    lease_seconds: float
    crash_limit: int
    concurrency: int | None
    queues: list[str] | None
    labels: dict[str, str]
    limits: Limits
    recover: bool
    _tasks: dict[str, asyncio.Task[None]]
    _executors: dict[str, RunExecutor]
    _heartbeat: asyncio.Task[None] | None
    #: runs whose execution crashed here: their leases are ended, not handed back
    _crashed: set[str]

    if TYPE_CHECKING:  # provided by WorkflowEngine and WaitControl

        def _workflow_versions(self) -> list[tuple[str, str]]: ...

        def _prepare(self, snapshot: Any) -> dict[str, Any]: ...

        def _wake_soon(self) -> None: ...

        def _executing(self) -> set[str]: ...

    # ------------------------------------------------------------ claiming

    def lease_until(self, tx: Tx) -> datetime:
        """When a lease taken or extended now (in ``tx``) runs out, on the database's clock."""
        return db_now(tx) + timedelta(seconds=self.lease_seconds)

    def capacity(self) -> int:
        """How many more runs this engine may take now (its ``concurrency`` minus held runs)."""
        if self.concurrency is None:
            return _CLAIM_BATCH
        return max(0, min(_CLAIM_BATCH, self.concurrency - len(self._executing())))

    def _claimer(self, *, executing: bool, due: bool, own: Collection[str] = ()) -> Claimer:
        offered = [f"{k}={v}" for k, v in self.labels.items()]
        scope = ClaimScope(
            kind="workflow",
            versions=self._workflow_versions(),
            queues=self.queues,
            labels=offered,
            executing=executing,
            due=due,
            owner=self.worker_id,
            own=own,
        )
        return Claimer(
            owner=self.worker_id,
            scope=scope,
            lease_for=timedelta(seconds=self.lease_seconds),
            limits=self.limits,
            crash_limit=self.crash_limit,
            prepare=self._prepare,
        )

    async def _claim(
        self,
        *,
        executing: bool,
        due: bool,
        limit: int,
        only: str | None = None,
        own: Collection[str] = (),
    ) -> list[ClaimedRun]:
        if limit <= 0 or not self._workflow_versions():
            return []
        claimer = self._claimer(executing=executing, due=due, own=own)
        claimed, dead = await self.host.db(
            _claim_sync,
            self.host,
            claimer,
            limit,
            self._executing(),
            only,
        )
        for run_id in dead:
            log.error("run %s was moved to the dead letters", run_id)
        return claimed

    # ------------------------------------------------------------ heartbeat

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return  # a start tried again after a database error
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat_forever(), name=f"durable-heartbeat-{self.worker_id}"
        )

    async def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            await stop_task(self._heartbeat)
            self._heartbeat = None

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.beat()
            except StatewfError as exc:  # the database is away: the next beat tries again
                log.warning("heartbeat of %s failed: %s", self.worker_id, exc)

    def _records_beats(self) -> bool:
        """Whether a heartbeat also writes a row of its own (a registered worker)."""
        return False

    def _record_beat(self, tx: Tx, held: int) -> None:
        """Write this holder's own heartbeat row in the heartbeat's transaction."""

    async def beat(self) -> set[str]:
        """Extend the leases of the runs executing here; the ids whose lease was lost."""
        held = {rid: ex.lease.epoch for rid, ex in self._executors.items() if ex.lease is not None}
        count = len(self._executing())
        if not held and not self._records_beats():
            return set()

        def extend_sync() -> set[str]:
            # one transaction: the leases and (for a worker) its heartbeat row
            with self.host.store.transaction() as tx:
                kept = extend(tx, self.worker_id, held, self.lease_until(tx))
                self._record_beat(tx, count)
                return kept

        kept = await self.host.db(extend_sync)
        lost = set(held) - kept
        for run_id in lost:
            executor = self._executors.get(run_id)
            if executor is None or executor.lease is None:
                continue  # ended meanwhile
            executor.lose_lease()
            task = self._tasks.get(run_id)
            if task is not None:
                task.cancel()
        return lost

    # ------------------------------------------------------------ releasing

    async def _release(self, run_ids: Collection[str]) -> None:
        """Give up the leases of these runs; poke the scheduler if one of them is due already."""
        if not run_ids:
            return
        ids = list(run_ids)

        def release_sync() -> list[tuple[str, datetime | None]]:
            with self.host.store.transaction() as tx:
                return release(tx, self.worker_id, ids)

        try:
            released = await self.host.db(release_sync)
        except StatewfError as exc:  # the lease runs out by itself
            log.warning("could not release runs %s: %s", ids, exc)
            return
        now = self.host.clock.now()
        if any(wake is not None and wake <= now for _, wake in released):
            self._wake_soon()

    def _release_everything(self) -> None:
        """Give up every lease this engine holds (when it closes); blocking."""
        try:
            with self.host.store.transaction() as tx:
                count = release_all(tx, self.worker_id, keep=self._crashed)
                # a crashed execution's lease ends, but is not handed back: the next
                # claim (at once, by anyone) counts the crash
                expire_all(tx, self.worker_id, db_now(tx), only=self._crashed)
        except StatewfError as exc:  # the leases run out by themselves
            log.warning("%s could not release its runs on closing: %s", self.worker_id, exc)
            return
        if count:
            log.info("%s released %s run(s) on closing", self.worker_id, count)


def _claim_sync(
    host: RunHost,
    claimer: Claimer,
    limit: int,
    exclude: set[str],
    only: str | None,
) -> tuple[list[ClaimedRun], list[str]]:
    return claim(host.store, claimer, host.clock, limit=limit, exclude=exclude, only=only)
