"""The leases one engine holds on the runs it executes: claiming, extending, releasing.

Every run an engine executes is held under a lease: runs it starts itself are
inserted already leased, others are claimed (:mod:`durable.control.claim`). Its executor
extends the leases every third of the lease (a run whose lease could not be
extended, because another worker took it over after this process stalled, is
stopped); a run that waits or ends is released, and closing releases every run
still held, so another engine takes them up without waiting for the leases to run out.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from durable.control.claim import (
    Claimed,
    ClaimedRun,
    Claimer,
    Limits,
    RunFold,
    claim,
    claim_runs,
    claim_runs_on_loop,
)
from durable.execution.registry import Registry
from durable.execution.writer import RunHost
from statewf.errors import StatewfError
from statewf.store import Tx, pgclaim
from statewf.store.leases import ClaimScope, db_now, expire_all, extend, release, release_all
from statewf.store.loop_claim import LoopClaimer

log = logging.getLogger("durable")


def new_worker_id() -> str:
    """A unique id for one engine or worker process: host, pid and a random part."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Leases:
    """Who holds (``owner``), for how long, and what it may claim; the lease queries."""

    host: RunHost
    registry: Registry
    owner: str
    seconds: float
    crash_limit: int
    queues: list[str] | None
    labels: dict[str, str]
    limits: Limits = field(default_factory=Limits)
    #: what else a heartbeat writes in its transaction (a worker's own row), given
    #: the number of runs executing and the database's time; None: nothing
    beat_row: Callable[[Tx, int, datetime], None] | None = None
    #: the scheduler's claims sent from the event loop (PostgreSQL), once one was made
    _on_loop: LoopClaimer | None = field(default=None, init=False, repr=False)
    #: whether a scheduler pass was made
    _passed: bool = field(default=False, init=False, repr=False)

    def until(self, tx: Tx) -> datetime:
        """When a lease taken or extended now (in ``tx``) runs out, on the database's clock."""
        return db_now(tx) + timedelta(seconds=self.seconds)

    async def claim(
        self,
        *,
        executing: bool,
        due: bool,
        limit: int,
        exclude: Collection[str],
        only: str | None = None,
        own: Collection[str] = (),
    ) -> list[ClaimedRun]:
        """Claim up to ``limit`` runs this holder may take (none if it has no workflows)."""
        claimer = self._claimer(executing=executing, due=due, own=own)
        if limit <= 0 or claimer is None:
            return []
        store, clock, excluded = self.host.store, self.host.clock, set(exclude)
        claimed, dead = await self.host.db(
            lambda: claim(store, claimer, clock, limit=limit, exclude=excluded, only=only)
        )
        for run_id in dead:
            log.error("run %s was moved to the dead letters", run_id)
        return claimed

    async def claim_due(
        self,
        *,
        executing: bool,
        limit: int,
        exclude: Collection[str],
        fold: RunFold | None = None,
    ) -> Claimed:
        """:meth:`claim` of a scheduler's pass: also the earliest wake-up of the runs left
        waiting (read by the claim's own transaction, after its rows). ``fold``: the
        woken runs' first rows in the claim's transaction, when it is sent from the
        event loop (:func:`~durable.control.claim.claim_runs_on_loop`)."""
        claimer = self._claimer(executing=executing, due=True, own=())
        if limit <= 0 or claimer is None:
            return Claimed()
        store, clock, excluded = self.host.store, self.host.clock, set(exclude)
        claimed: Claimed | None = None
        on_loop = None if claimer.limits.any else self._loop_claimer()
        # the first pass (at start-up) goes through a thread: the loop's connection is
        # opened by a later one, not while the first runs open their own connections
        # (opened together, they slow each other down)
        first, self._passed = not self._passed, True
        if on_loop is not None and not first:
            # from the event loop itself: a woken run's claim hops to no thread
            claimed = await claim_runs_on_loop(
                on_loop, claimer, clock, limit=limit, exclude=excluded, next_wake=True, fold=fold
            )
        if claimed is None:
            claimed = await self.host.db(
                lambda: claim_runs(
                    store, claimer, clock, limit=limit, exclude=excluded, next_wake=True
                )
            )
        for run_id in claimed.dead:
            log.error("run %s was moved to the dead letters", run_id)
        return claimed

    def _loop_claimer(self) -> LoopClaimer | None:
        """The claims and releases sent from the event loop (None: not on this store)."""
        if self._on_loop is None and pgclaim.available(self.host.store):
            self._on_loop = LoopClaimer(self.host.store)
        return self._on_loop

    def _claimer(self, *, executing: bool, due: bool, own: Collection[str]) -> Claimer | None:
        """Who claims, what and for how long (None: this holder has no workflows)."""
        versions = self.registry.versions()
        if not versions:
            return None
        scope = ClaimScope(
            kind="workflow",
            versions=versions,
            queues=self.queues,
            labels=[f"{k}={v}" for k, v in self.labels.items()],
            executing=executing,
            due=due,
            owner=self.owner,
            own=own,
        )
        return Claimer(
            owner=self.owner,
            scope=scope,
            lease_for=timedelta(seconds=self.seconds),
            limits=self.limits,
            crash_limit=self.crash_limit,
            prepare=self.registry.prepare,
        )

    def writes_beats(self) -> bool:
        """Whether a heartbeat writes something even when no run is held."""
        return self.beat_row is not None

    async def extend(self, held: Mapping[str, int], executing: int) -> set[str]:
        """Extend the leases of ``held`` (run id -> epoch held; and write the beat row);
        the ids still held. A run claimed again since, at another epoch, is not."""
        leases = dict(held)

        def extend_sync() -> set[str]:
            # one transaction: the leases and (for a worker) its heartbeat row
            with self.host.store.transaction() as tx:
                now = db_now(tx)  # read once: the leases and the worker's row agree
                kept = extend(tx, self.owner, leases, now + timedelta(seconds=self.seconds))
                if self.beat_row is not None:
                    self.beat_row(tx, executing, now)
                return kept

        return await self.host.db(extend_sync)

    async def release(self, run_ids: Collection[str]) -> bool:
        """Give up the leases of these runs; whether one of them is due already."""
        if not run_ids:
            return False
        ids = list(run_ids)

        def release_sync() -> list[tuple[str, datetime | None]]:
            with self.host.store.transaction() as tx:
                return release(tx, self.owner, ids)

        try:
            on_loop = self._loop_claimer()
            # from the event loop (PostgreSQL): one round trip, no thread hop
            found = None if on_loop is None else await on_loop.release(self.owner, ids)
            released = found if found is not None else await self.host.db(release_sync)
        except StatewfError as exc:  # the lease runs out by itself
            log.warning("could not release runs %s: %s", ids, exc)
            return False
        now = self.host.clock.now()
        return any(wake is not None and wake <= now for _, wake in released)

    def release_everything(self, crashed: Collection[str] = ()) -> None:
        """Give up every lease this holder holds (when it closes); blocking.

        ``crashed``: runs whose execution crashed here; their leases are ended, not
        handed back, so the next claim (at once, by anyone) counts the crash.
        """
        on_loop, self._on_loop = self._on_loop, None
        if on_loop is not None:  # no claim is on its way: the scheduler has stopped
            on_loop.close()
        try:
            with self.host.store.transaction() as tx:
                count = release_all(tx, self.owner, keep=crashed)
                expire_all(tx, self.owner, db_now(tx), only=crashed)
        except StatewfError as exc:  # the leases run out by themselves
            log.warning("%s could not release its runs on closing: %s", self.owner, exc)
            return
        if count:
            log.info("%s released %s run(s) on closing", self.owner, count)
