"""Claiming runs under leases: what a worker (or an in-process engine) executes.

One claim is one transaction. It locks runnable runs this claimer may take
(its workflow versions, queues and labels; ``SKIP LOCKED`` on PostgreSQL), keeps
to the flow-control limits (per queue, per ``resource_id``), gives each taken run a
lease with a new fencing epoch and appends one log row per run: ``claim`` for a
new run's first execution, ``recover`` for a run in progress taken up again (its
holder released it, or died and its lease ran out) and ``wake`` for a waiting run
whose time has come. That row moves the run's version,
so every later write of a previous holder fails (its writes are conditional on the
version it saw) and, on reloading, it finds the lease gone and stops.

A run taken over ``crash_limit`` times without finishing one more step is not
executed again: a ``dead_letter`` row moves it to the dead letters, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from durable.control.actions import append_row, next_row
from durable.log.records import DEAD, KIND_CLAIM, KIND_DEAD, KIND_RECOVER, KIND_WAKE, RUNNING
from statewf.clock import Clock
from statewf.records import Instance, TransitionRecord
from statewf.store import SqlStore, Tx
from statewf.store.leases import (
    EXECUTING,
    Claimable,
    ClaimScope,
    Lease,
    active_counts,
    claimable,
    lock_claims,
    release,
    saturated,
)
from statewf.store.runs import run_logs

log = logging.getLogger("durable")


def wall_now() -> datetime:
    """The wall clock leases are measured on (UTC), whatever the engine's clock is."""
    return datetime.now(UTC)


#: Default lease: a worker that stops heart-beating loses its runs after this long.
DEFAULT_LEASE = 30.0
#: Default number of crashed executions at one step before a run is dead-lettered.
DEFAULT_CRASH_LIMIT = 3


@dataclass(frozen=True)
class Limits:
    """Flow control enforced at claim time.

    ``queues``: most runs executing at once per queue, across all workers.
    ``per_resource``: most runs executing at once per ``resource_id`` (tenant).
    """

    queues: Mapping[str, int] = field(default_factory=dict)
    per_resource: int | None = None

    @property
    def any(self) -> bool:
        """Whether any limit applies (claims are then serialized)."""
        return bool(self.queues) or self.per_resource is not None


@dataclass
class ClaimedRun:
    """A run this claimer now holds: its snapshot and log after the claim row, its lease."""

    snapshot: Instance
    records: list[TransitionRecord]
    lease: Lease


@dataclass(frozen=True)
class Claimer:
    """Who claims (``owner``), for how long, and what it may take."""

    owner: str
    scope: ClaimScope
    lease_for: timedelta
    limits: Limits = Limits()
    crash_limit: int = DEFAULT_CRASH_LIMIT
    #: context fields a claim row adds when the run lacks them (plan, deadline), by run
    prepare: Callable[[Instance], dict[str, Any]] | None = None


def claim(
    store: SqlStore,
    claimer: Claimer,
    clock: Clock,
    *,
    limit: int,
    exclude: Collection[str] = (),
    only: str | None = None,
) -> tuple[list[ClaimedRun], list[str]]:
    """Claim up to ``limit`` runs; the claimed runs and the ids dead-lettered on the way.

    Times are read inside the transaction, once its locks are held: ``clock`` (the
    engine's) decides which waits are due and stamps the rows; leases are measured
    on the wall clock.
    """
    if limit <= 0:
        return [], []
    limits = claimer.limits
    with store.transaction() as tx:
        if limits.any:
            lock_claims(tx, "limits")
        now, lease_now = clock.now(), wall_now()
        scope: ClaimScope | None = claimer.scope
        running = (
            active_counts(tx, lease_now, by="queue", among=list(limits.queues))
            if limits.queues
            else {}
        )
        if limits.queues:
            scope = _open_queues(claimer.scope, limits, running)
        if scope is None:
            return [], []
        full = saturated(tx, lease_now, limits.per_resource) if limits.per_resource else []
        window = limit * 4 if limits.any else limit
        candidates = claimable(
            tx,
            scope,
            now,
            lease_now=lease_now,
            limit=window,
            exclude=exclude,
            saturated_resources=full,
            only=only,
        )
        taken = _within_limits(tx, candidates, limits, running, lease_now, limit)
        # the rows' time comes after every count read above (PostgreSQL reads each
        # statement's own snapshot): a release those counts saw happened before it
        now = max(now, clock.now())
        dead: list[str] = []
        rows: list[TransitionRecord] = []
        held: list[tuple[Instance, Lease]] = []
        until = lease_now + claimer.lease_for
        for item in taken:
            snap = item.instance
            takeover = (
                item.previous_owner is not None
                and snap.status in EXECUTING
                and item.previous_owner != claimer.owner
            )
            crashes = _crashes(snap, takeover)
            if takeover and crashes["count"] >= claimer.crash_limit:
                _dead_letter(tx, snap, item.previous_owner, crashes, now)
                dead.append(snap.id)
                continue
            # the row is locked: its next epoch is known, and the lease goes in with
            # the snapshot the claim row implies (one UPDATE per run)
            epoch = item.previous_epoch + 1
            fields = _claim_fields(claimer, item, epoch, takeover, crashes)
            record, new = next_row(snap, now, **fields)
            tx.update_instance(
                new,
                snap.version,
                lease_owner=claimer.owner,
                lease_expires_at=until,
                lease_epoch=epoch,
            )
            rows.append(record)
            held.append((new, Lease(owner=claimer.owner, epoch=epoch, expires_at=until)))
        tx.append(rows)  # every claim row in one statement
        logs = run_logs(tx, [snap.id for snap, _ in held])
        claimed = [ClaimedRun(snap, logs[snap.id], lease) for snap, lease in held]
    return claimed, dead


def _open_queues(scope: ClaimScope, limits: Limits, running: dict[str, int]) -> ClaimScope | None:
    """The scope without the queues whose global limit is reached (None if none is left)."""
    full = sorted(q for q, n in limits.queues.items() if running.get(q, 0) >= n)
    if scope.queues is not None and not set(scope.queues) - set(full):
        return None
    return replace(scope, closed_queues=full) if full else scope


def _within_limits(
    tx: Tx,
    candidates: list[Claimable],
    limits: Limits,
    running: dict[str, int],
    now: datetime,
    limit: int,
) -> list[Claimable]:
    """The candidates to take, best first, keeping every queue and resource within limits.

    ``running``: the runs each limited queue executes now (read once per claim).
    """
    if not limits.any:
        return candidates[:limit]
    queue_room = {q: n - running.get(q, 0) for q, n in limits.queues.items()}
    resources = {i.instance.resource_id for i in candidates if i.instance.resource_id}
    per_resource = limits.per_resource
    active = (
        active_counts(tx, now, by="resource", among=resources) if per_resource is not None else {}
    )
    taken: list[Claimable] = []
    for item in candidates:
        if len(taken) >= limit:
            break
        queue = item.queue
        if queue in queue_room and queue_room[queue] <= 0:
            continue
        resource = item.instance.resource_id
        if per_resource is not None and resource is not None:
            if active.get(resource, 0) >= per_resource:
                continue
            active[resource] = active.get(resource, 0) + 1
        if queue in queue_room:
            queue_room[queue] -= 1
        taken.append(item)
    return taken


def _crashes(snap: Instance, takeover: bool) -> dict[str, int]:
    """The run's count of crashed executions at its current step, after this claim."""
    done = int(snap.context.get("completed_steps", 0))
    before = snap.context.get("crashes") or {}
    if not takeover:
        return {"at": done, "count": int(before.get("count", 0)) if before.get("at") == done else 0}
    count = int(before.get("count", 0)) + 1 if before.get("at") == done else 1
    return {"at": done, "count": count}


def _claim_fields(
    claimer: Claimer, item: Claimable, epoch: int, takeover: bool, crashes: dict[str, int]
) -> dict[str, Any]:
    snap, previous = item.instance, item.previous_owner
    meta: dict[str, Any] = {"worker": claimer.owner, "epoch": epoch}
    context: dict[str, Any] = {}
    if claimer.prepare is not None:
        context.update(claimer.prepare(snap))
    if crashes["count"] or "crashes" in snap.context:
        context["crashes"] = crashes
    if snap.status in EXECUTING:
        first = item.previous_epoch == 0  # never held: a run started by a client
        meta["reason"] = "takeover" if takeover else ("start" if first else "resume")
        if takeover:
            meta["previous_worker"] = previous
            log.warning(
                "run %s: taking it over from worker %s, whose lease ran out (crash %s at step %s)",
                snap.id,
                previous,
                crashes["count"],
                crashes["at"],
            )
        kind = KIND_CLAIM if first else KIND_RECOVER
        return {"kind": kind, "status": RUNNING, "meta": meta, "context_set": context}
    meta["due"] = snap.wake_at.isoformat() if snap.wake_at else None
    return {"kind": KIND_WAKE, "status": RUNNING, "meta": meta, "context_set": context}


def _dead_letter(
    tx: Tx, snap: Instance, previous: str | None, crashes: dict[str, int], now: datetime
) -> None:
    reason = (
        f"the workers executing this run died {crashes['count']} times after step "
        f"{crashes['at']} (last: {previous}); it is not executed again until retried"
    )
    log.error("run %s: moved to the dead letters: %s", snap.id, reason)
    append_row(
        tx,
        snap,
        now,
        kind=KIND_DEAD,
        target=(DEAD,),
        status=DEAD,
        meta={"reason": reason, "crashes": crashes["count"], "worker": previous},
        context_set={"crashes": crashes, "error": {"type": "DeadLettered", "message": reason}},
    )
    if previous is not None:
        release(tx, previous, [snap.id])
