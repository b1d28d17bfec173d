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
The count is kept in the log (the claim rows' context), whoever claims: a worker
reclaiming its own run after a crash counts too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from durable.log.records import (
    DEAD,
    KIND_CLAIM,
    KIND_DEAD,
    KIND_RECOVER,
    KIND_STEP,
    KIND_WAKE,
    RUNNING,
)
from statewf.appending import Move, append, next_row
from statewf.clock import Clock, SystemClock
from statewf.records import Instance, ReplayRow, TransitionRecord
from statewf.store import SqlStore, Tx, pgclaim, runs
from statewf.store.claim_statements import Folded
from statewf.store.leases import (
    EXECUTING,
    WAKEABLE,
    Claimable,
    ClaimScope,
    Lease,
    active_counts,
    claimable,
    db_now,
    lock_claims,
    release,
    saturated,
)
from statewf.store.loop_claim import LoopClaimer, claim_blocking

log = logging.getLogger("durable")


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
    """A run this claimer now holds: its snapshot and log after the claim row, its lease.

    The log is read for replay: its ``step`` rows as :class:`~statewf.records.StepRow`,
    after the run's replay snapshot if it has one (in place of the rows it covers).
    """

    snapshot: Instance
    records: list[ReplayRow]
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


@dataclass(frozen=True)
class Loaded:
    """What one claim reads, under its locks, before it decides anything."""

    candidates: list[Claimable]
    #: runs executing now per limited queue, and per resource of the candidates
    queue_counts: dict[str, int]
    resource_counts: dict[str, int]
    #: the engine's clock (row times, due waits) and the database's clock (leases)
    now: datetime
    lease_now: datetime


@dataclass
class ClaimPlan:
    """What a claim writes: the claim rows with their leases, and the dead letters."""

    claims: list[tuple[Instance, TransitionRecord, Instance, Lease]] = field(default_factory=list)
    #: (run, the holder whose lease ran out, the crash count) per run to dead-letter
    dead: list[tuple[Instance, str | None, dict[str, int]]] = field(default_factory=list)


@dataclass
class Claimed:
    """What one claim took: the runs now held, the ids dead-lettered on the way, and
    (when asked) the earliest wake-up of the runs left waiting."""

    runs: list[ClaimedRun] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    #: whether :attr:`next_wake` was read (``next_wake=True`` and a claim was made)
    asked: bool = False
    next_wake: datetime | None = None


def claim(
    store: SqlStore,
    claimer: Claimer,
    clock: Clock,
    *,
    limit: int,
    exclude: Collection[str] = (),
    only: str | None = None,
) -> tuple[list[ClaimedRun], list[str]]:
    """Claim up to ``limit`` runs; the claimed runs and the ids dead-lettered on the way
    (:func:`claim_runs`)."""
    done = claim_runs(store, claimer, clock, limit=limit, exclude=exclude, only=only)
    return done.runs, done.dead


def claim_runs(
    store: SqlStore,
    claimer: Claimer,
    clock: Clock,
    *,
    limit: int,
    exclude: Collection[str] = (),
    only: str | None = None,
    next_wake: bool = False,
) -> Claimed:
    """Claim up to ``limit`` runs: those claimed, the ids dead-lettered on the way and,
    with ``next_wake``, the earliest wake-up among the runs left waiting (not
    ``exclude``'s), read in the same transaction after the claim rows.

    One transaction: load (lock the candidates, read the counts the limits need) →
    :func:`plan_claim` (pure) → write. Times are read inside the transaction, once its
    locks are held: ``clock`` (the engine's) decides which waits are due and stamps
    the rows; leases are measured on the database's clock
    (:func:`~statewf.store.leases.db_now`), and so are due waits and row times when
    the engine runs on the wall clock. On PostgreSQL without limits the same
    transaction takes two round trips (:func:`_claim_pipelined`).
    """
    if limit <= 0:
        return Claimed()
    if pgclaim.available(store) and not claimer.limits.any:
        return _claim_pipelined(
            store, claimer, clock, limit=limit, exclude=exclude, only=only, next_wake=next_wake
        )
    with store.transaction() as tx:
        loaded = load_claimable(tx, claimer, clock, limit=limit, exclude=exclude, only=only)
        if loaded is None:
            done = Claimed()
        else:
            plan = plan_claim(claimer, loaded, limit)
            runs, dead = write_claim(tx, plan, loaded.now)
            done = Claimed(runs, dead)
        if next_wake:
            done.asked = True
            done.next_wake = waiting_until(tx, claimer.scope, exclude)
        return done


def waiting_until(tx: Tx, scope: ClaimScope, exclude: Collection[str]) -> datetime | None:
    """The earliest ``wake_at`` of the waiting runs ``scope`` covers, ``exclude``'s aside."""
    return runs.next_wake(tx, scope.kind, scope.versions, WAKEABLE, exclude=exclude)


def load_claimable(
    tx: Tx,
    claimer: Claimer,
    clock: Clock,
    *,
    limit: int,
    exclude: Collection[str],
    only: str | None,
) -> Loaded | None:
    """Lock the runs this claimer may take and read the counts its limits need (None: none)."""
    limits = claimer.limits
    if limits.any:
        lock_claims(tx, "limits")
    # on the wall clock, the engine's time is the database's too: a worker whose
    # clock is off neither wakes waits early nor stamps rows out of order
    system = isinstance(clock, SystemClock)
    lease_now = db_now(tx)
    now = lease_now if system else clock.now()
    scope: ClaimScope | None = claimer.scope
    running = (
        active_counts(tx, lease_now, by="queue", among=list(limits.queues)) if limits.queues else {}
    )
    if limits.queues:
        scope = _open_queues(claimer.scope, limits, running)
    if scope is None:
        return None
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
    resources = {i.instance.resource_id for i in candidates if i.instance.resource_id}
    per_resource = (
        active_counts(tx, lease_now, by="resource", among=resources)
        if limits.per_resource is not None and limits.any
        else {}
    )
    # the rows' time comes after every count read above (PostgreSQL reads each
    # statement's own snapshot): a release those counts saw happened before it
    # (no candidate: no row is stamped, and the database is not asked again)
    later = (db_now(tx) if system else clock.now()) if candidates else now
    return Loaded(candidates, running, per_resource, max(now, later), lease_now)


def plan_claim(claimer: Claimer, loaded: Loaded, limit: int) -> ClaimPlan:
    """Which loaded runs to take (within the limits), with which rows and leases. Pure."""
    plan = ClaimPlan()
    until = loaded.lease_now + claimer.lease_for
    taken = _within_limits(loaded, claimer.limits, limit)
    for item in taken:
        snap = item.instance
        # The lease was not handed back: the execution holding it crashed (its
        # process died, or workflow code raised a BaseException), whoever claims
        # now, the same worker included. Only a claimer's own stopped runs are not.
        takeover = (
            item.previous_owner is not None
            and snap.status in EXECUTING
            and not (item.previous_owner == claimer.owner and snap.id in claimer.scope.own)
        )
        crashes = _crashes(snap, takeover)
        if takeover and crashes["count"] >= claimer.crash_limit:
            plan.dead.append((snap, item.previous_owner, crashes))
            continue
        # the row is locked: its next epoch is known, and the lease goes in with
        # the snapshot the claim row implies (one UPDATE per run)
        epoch = item.previous_epoch + 1
        fields = _claim_fields(claimer, item, epoch, takeover, crashes)
        record, new = next_row(snap, loaded.now, **fields)
        lease = Lease(owner=claimer.owner, epoch=epoch, expires_at=until)
        plan.claims.append((snap, record, new, lease))
    return plan


def write_claim(tx: Tx, plan: ClaimPlan, now: datetime) -> tuple[list[ClaimedRun], list[str]]:
    """Write a claim plan: dead letters, then every claim row in one statement."""
    for snap, previous, crashes in plan.dead:
        _dead_letter(tx, snap, previous, crashes, now)
    moves = [
        Move(
            new,
            snap.version,
            {
                "lease_owner": lease.owner,
                "lease_expires_at": lease.expires_at,
                "lease_epoch": lease.epoch,
            },
        )
        for snap, _, new, lease in plan.claims
    ]
    append(tx, [record for _, record, _, _ in plan.claims], *moves)
    logs = runs.replay_logs(tx, [new.id for _, _, new, _ in plan.claims], KIND_STEP)
    claimed = [ClaimedRun(new, logs[new.id], lease) for _, _, new, lease in plan.claims]
    return claimed, [snap.id for snap, _, _ in plan.dead]


def _claim_pipelined(
    store: SqlStore,
    claimer: Claimer,
    clock: Clock,
    *,
    limit: int,
    exclude: Collection[str],
    only: str | None,
    next_wake: bool,
) -> Claimed:
    """:func:`claim` without limits on PostgreSQL: the same transaction, the same plan
    and rows, in two round trips (:mod:`statewf.store.pgclaim`)."""
    pipelined = _Pipelined(claimer, clock, limit)
    asked: dict[str, Any] = {
        "due_at": pipelined.due_at,
        "limit": limit,
        "exclude": exclude,
        "only": only,
        "decide": pipelined.decide,
        "next_wake": next_wake,
        "light_kind": KIND_STEP,
    }
    # on libpq, as from the event loop; psycopg's pipeline for a parameter without text
    answer = claim_blocking(store, claimer.scope, **asked)
    if answer is None:
        answer = pgclaim.claim(store, claimer.scope, **asked)
    logs, wake = answer
    return pipelined.claimed(logs, wake, next_wake)


class RunFold(Protocol):
    """The first rows of woken runs, written in the claim's own transaction
    (:class:`statewf.store.claim_statements.Fold`, over the claimed runs)."""

    async def rows(self, woken: list[ClaimedRun]) -> Sequence[Folded]:
        """The statements to send before the claim's commit; ``woken``: the runs whose
        claim row is a ``wake`` (waiting runs made due), held, their logs read."""

    def committed(self, returned: Sequence[int]) -> None:
        """The claim committed: how many rows each statement of :meth:`rows` returned."""


async def claim_runs_on_loop(
    on_loop: LoopClaimer,
    claimer: Claimer,
    clock: Clock,
    *,
    limit: int,
    exclude: Collection[str] = (),
    next_wake: bool = False,
    fold: RunFold | None = None,
) -> Claimed | None:
    """:func:`claim_runs` sent from the event loop (:mod:`statewf.store.loop_claim`):
    PostgreSQL on statewf's own pools, no flow-control limits. None: nothing was
    claimed and the claim must take :func:`claim_runs` (in a thread) instead.

    ``fold``: when the claim wakes waiting runs, it is handed them with the
    transaction open and their rows locked, and the rows it makes commit with the
    claim."""
    if limit <= 0:
        return Claimed()
    if claimer.limits.any:
        return None
    pipelined = _Pipelined(claimer, clock, limit)
    answer = await on_loop.claim(
        claimer.scope,
        due_at=pipelined.due_at,
        limit=limit,
        exclude=exclude,
        only=None,
        decide=pipelined.decide,
        next_wake=next_wake,
        light_kind=KIND_STEP,
        fold=None if fold is None else _WakeFold(pipelined, fold),
    )
    if answer is None:
        return None
    logs, wake = answer
    return pipelined.claimed(logs, wake, next_wake)


class _WakeFold:
    """A :class:`RunFold` as the store's claim calls it: for ``wake`` rows only."""

    def __init__(self, pipelined: _Pipelined, fold: RunFold) -> None:
        self.pipelined = pipelined
        self.fold = fold

    def wants(self, writes: Sequence[pgclaim.ClaimWrite]) -> bool:
        """Whether the claim wakes a waiting run (leased: not a dead letter)."""
        return any(w.record.kind == KIND_WAKE and w.lease_owner is not None for w in writes)

    async def rows(self, logs: dict[str, list[ReplayRow]]) -> Sequence[Folded]:
        """The fold's rows for the woken runs, given the claimed runs' logs."""
        plan = self.pipelined.planned[-1]
        woken = [
            ClaimedRun(new, logs[new.id], lease)
            for _, record, new, lease in plan.claims
            if record.kind == KIND_WAKE
        ]
        return await self.fold.rows(woken) if woken else ()

    def committed(self, returned: Sequence[int]) -> None:
        """Hand the rows' answers to the fold."""
        self.fold.committed(returned)


class _Pipelined:
    """One pipelined claim's decision (``decide``, between its round trips, with the
    runs locked) and what it took."""

    def __init__(self, claimer: Claimer, clock: Clock, limit: int) -> None:
        self.claimer = claimer
        self.clock = clock
        self.limit = limit
        self.system = isinstance(clock, SystemClock)
        self.due_at = None if self.system else clock.now()
        self.planned: list[ClaimPlan] = []

    def decide(self, found: pgclaim.Found) -> list[pgclaim.ClaimWrite]:
        """The writes of the plan for the locked candidates (:func:`plan_claim`)."""
        # as load_claimable: the engine's clock decides due waits and stamps the rows,
        # read again once the locks are held; on the wall clock that is the database's
        now = found.lease_now if self.due_at is None else self.due_at
        later = found.locked_at if self.system else self.clock.now()
        loaded = Loaded(found.candidates, {}, {}, max(now, later), found.lease_now)
        plan = plan_claim(self.claimer, loaded, self.limit)
        self.planned.append(plan)
        writes = []
        for snap, previous, crashes in plan.dead:
            record, new = _dead_row(snap, previous, crashes, loaded.now)
            # a dead letter is a takeover: its holder's lease ends with the row (release())
            writes.append(pgclaim.ClaimWrite(new, record, snap.version, None, None, None))
        for snap, record, new, lease in plan.claims:
            writes.append(
                pgclaim.ClaimWrite(
                    new, record, snap.version, lease.owner, lease.expires_at, lease.epoch
                )
            )
        return writes

    def claimed(
        self,
        logs: dict[str, list[ReplayRow]],
        wake: datetime | None,
        next_wake: bool,
    ) -> Claimed:
        """What the claim took, once committed."""
        done = Claimed(asked=next_wake, next_wake=wake)
        if self.planned:
            plan = self.planned[-1]
            done.runs = [ClaimedRun(new, logs[new.id], lease) for _, _, new, lease in plan.claims]
            done.dead = [snap.id for snap, _, _ in plan.dead]
        return done


def _open_queues(scope: ClaimScope, limits: Limits, running: dict[str, int]) -> ClaimScope | None:
    """The scope without the queues whose global limit is reached (None if none is left)."""
    full = sorted(q for q, n in limits.queues.items() if running.get(q, 0) >= n)
    if scope.queues is not None and not set(scope.queues) - set(full):
        return None
    return replace(scope, closed_queues=full) if full else scope


def _within_limits(loaded: Loaded, limits: Limits, limit: int) -> list[Claimable]:
    """The candidates to take, best first, keeping every queue and resource within limits."""
    candidates = loaded.candidates
    if not limits.any:
        return candidates[:limit]
    queue_room = {q: n - loaded.queue_counts.get(q, 0) for q, n in limits.queues.items()}
    per_resource = limits.per_resource
    active = dict(loaded.resource_counts)
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


def _dead_row(
    snap: Instance, previous: str | None, crashes: dict[str, int], now: datetime
) -> tuple[TransitionRecord, Instance]:
    """The ``dead_letter`` row of a run taken over too often, and the snapshot after it."""
    reason = (
        f"the workers executing this run died {crashes['count']} times after step "
        f"{crashes['at']} (last: {previous}); it is not executed again until retried"
    )
    log.error("run %s: moved to the dead letters: %s", snap.id, reason)
    return next_row(
        snap,
        now,
        kind=KIND_DEAD,
        target=(DEAD,),
        status=DEAD,
        meta={"reason": reason, "crashes": crashes["count"], "worker": previous},
        context_set={"crashes": crashes, "error": {"type": "DeadLettered", "message": reason}},
    )


def _dead_letter(
    tx: Tx, snap: Instance, previous: str | None, crashes: dict[str, int], now: datetime
) -> None:
    record, new = _dead_row(snap, previous, crashes, now)
    append(tx, [record], Move(new, snap.version))
    if previous is not None:
        release(tx, previous, [snap.id])
