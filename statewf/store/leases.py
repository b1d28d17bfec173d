"""Leases on instances: who executes a run, until when, under which fencing epoch.

A worker *claims* runnable instances (``FOR UPDATE SKIP LOCKED`` on PostgreSQL),
which sets ``lease_owner``, ``lease_expires_at`` and bumps ``lease_epoch``; it then
*extends* the leases it holds (a heartbeat) and *releases* them when a run waits or
ends. A lease that ran out is claimable by anyone, through the same claim query:
there is no reaper. Fencing is the caller's: the claim appends a log row, so every
later write of the previous holder (conditional on the run's version) fails.

Lease times are the database's clock (:func:`db_now`: ``now()`` on the PostgreSQL
server, read inside the transaction that uses it), never a worker's own: a worker
whose clock runs ahead cannot see a live lease as run out, nor one behind grant a
lease that is already over. Extending is fenced by the lease's epoch, so a previous
incarnation of a worker (same id, restarted) cannot keep the new one's leases alive.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, not_, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from statewf.records import Instance
from statewf.store.effects import version_filter
from statewf.store.schema import UTCDateTime
from statewf.store.sql import Tx, instance_from_row

#: Statuses a run is executed in (claimable when nobody holds a live lease).
EXECUTING = ("pending", "running")
#: Statuses of runs a wake-up may claim when their ``wake_at`` has come.
WAKEABLE = ("waiting", "paused")


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one instance: its id, the fencing epoch, the expiry."""

    owner: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True)
class Claimable:
    """An instance locked by a claim, with the lease it had before (if any)."""

    instance: Instance
    queue: str
    previous_owner: str | None
    previous_expiry: datetime | None
    #: 0 for an instance never claimed before
    previous_epoch: int


@dataclass(frozen=True)
class ClaimScope:
    """Which instances a claimer may take.

    ``versions``: the (name, version) pairs whose code it has. ``queues``: the queues
    it serves (None: every queue). ``labels``: what it offers; an instance whose
    labels are not all among them is left for another claimer. ``executing``: also
    take runs in progress that nobody holds (new runs, crashed holders);
    ``due``: also take waiting runs whose wake-up time has come.
    """

    kind: str
    versions: Sequence[tuple[str, str]]
    queues: Sequence[str] | None = None
    labels: Collection[str] = ()
    executing: bool = True
    due: bool = True
    #: the claimer's id, and runs it holds but stopped executing (they count as free)
    owner: str | None = None
    own: Collection[str] = ()
    #: queues whose global limit is reached right now
    closed_queues: Collection[str] = ()


def db_now(tx: Tx) -> datetime:
    """The database's clock, read in ``tx`` (UTC): every lease time is measured on it.

    PostgreSQL: the server's ``clock_timestamp()`` (its current time, not the
    transaction's start), the one clock every worker shares. SQLite is a file on one
    machine: its processes share that machine's clock already.
    """
    if tx.dialect == "postgresql":
        value: datetime = tx.conn.execute(select(func.clock_timestamp())).scalar_one()
        return value.astimezone(UTC)
    return datetime.now(UTC)


def encode_labels(labels: Mapping[str, str] | None) -> list[str] | None:
    """Labels as stored: sorted ``key=value`` strings (None for none)."""
    if not labels:
        return None
    return sorted(f"{k}={v}" for k, v in labels.items())


def _free(c: Any, now: datetime, owner: str | None, own: Collection[str]) -> Any:
    """Nobody holds it, the lease ran out, or it is one of ``own``, held by the claimer."""
    free = or_(c.lease_owner.is_(None), c.lease_expires_at < now)
    if owner is None or not own:
        return free
    return or_(free, and_(c.lease_owner == owner, c.id.in_(list(own))))


def _labels_ok(tx: Tx, c: Any, offered: Collection[str]) -> Any:
    """Instances whose required labels are all among ``offered``."""
    if tx.dialect == "postgresql":
        return or_(c.labels.is_(None), c.labels.op("<@")(literal(sorted(offered), JSONB)))
    each = func.json_each(c.labels).table_valued("value")
    missing = select(literal(1)).select_from(each)
    if offered:
        missing = missing.where(each.c.value.not_in(sorted(offered)))
    return or_(c.labels.is_(None), not_(missing.exists()))


def lock_claims(tx: Tx, key: str) -> None:
    """Serialize claimers that enforce shared limits (a transaction advisory lock).

    PostgreSQL only; SQLite's write lock serializes every claim already.
    """
    if tx.dialect == "postgresql":
        name = f"statewf-claim:{tx.t.instances.schema}.{tx.t.instances.name}:{key}"
        tx.conn.execute(select(func.pg_advisory_xact_lock(zlib.crc32(name.encode()))))


def claimable(
    tx: Tx,
    scope: ClaimScope,
    now: datetime,
    *,
    lease_now: datetime,
    limit: int,
    exclude: Collection[str] = (),
    saturated_resources: Collection[str] = (),
    only: str | None = None,
) -> list[Claimable]:
    """Lock up to ``limit`` instances this claimer may take, best first.

    ``now`` decides which waits are due (the engine's clock); ``lease_now`` which
    leases ran out (the wall clock). Highest ``priority`` first, then the longest
    waiting. Instances locked by another claimer are skipped (PostgreSQL), never
    waited for. ``only`` restricts the claim to one instance.
    """
    c = tx.t.instances.c
    wanted: list[Any] = []
    if scope.executing:
        wanted.append(c.status.in_(EXECUTING))
    if scope.due:
        wanted.append(and_(c.status.in_(WAKEABLE), c.wake_at <= now))
    if not wanted or not scope.versions or limit <= 0:
        return []
    query = select(tx.t.instances).where(
        c.kind == scope.kind,
        version_filter(c, scope.versions),
        or_(*wanted),
        _free(c, lease_now, scope.owner, scope.own),
        _labels_ok(tx, c, scope.labels),
    )
    if scope.queues is not None:
        query = query.where(c.queue.in_(list(scope.queues)))
    if scope.closed_queues:
        query = query.where(c.queue.not_in(list(scope.closed_queues)))
    if exclude:
        query = query.where(c.id.not_in(list(exclude)))
    if only is not None:
        query = query.where(c.id == only)
    if saturated_resources:
        query = query.where(
            or_(c.resource_id.is_(None), c.resource_id.not_in(list(saturated_resources)))
        )
    query = (
        query.order_by(c.priority.desc(), c.updated_at, c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    found = []
    for row in tx.conn.execute(query):
        m = row._mapping
        found.append(
            Claimable(
                instance=instance_from_row(row),
                queue=m["queue"],
                previous_owner=m["lease_owner"],
                previous_expiry=_utc(tx, m["lease_expires_at"]),
                previous_epoch=int(m["lease_epoch"]),
            )
        )
    return found


def _live(c: Any, now: datetime) -> Any:
    """Held under a lease that has not run out, by a run still in progress."""
    return and_(
        c.lease_owner.is_not(None),
        c.lease_expires_at >= now,
        c.status.in_([*EXECUTING, *WAKEABLE]),
    )


def active_counts(
    tx: Tx, now: datetime, *, by: str, among: Collection[str] | None = None
) -> dict[str, int]:
    """Live leases per ``queue`` or per ``resource_id`` (only ``among`` these, if given)."""
    c = tx.t.instances.c
    column = c.queue if by == "queue" else c.resource_id
    query = select(column, func.count()).where(_live(c, now), column.is_not(None)).group_by(column)
    if among is not None:
        if not among:
            return {}
        query = query.where(column.in_(list(among)))
    return {str(key): int(n) for key, n in tx.conn.execute(query)}


def saturated(tx: Tx, now: datetime, limit: int) -> list[str]:
    """Resources holding ``limit`` or more live leases already."""
    c = tx.t.instances.c
    query = (
        select(c.resource_id)
        .where(_live(c, now), c.resource_id.is_not(None))
        .group_by(c.resource_id)
        .having(func.count() >= limit)
    )
    return [str(r) for r in tx.conn.execute(query).scalars()]


def extend(tx: Tx, owner: str, leases: Mapping[str, int], until: datetime) -> set[str]:
    """Extend ``owner``'s leases (instance id -> epoch held); the ids it still holds.

    A lease is extended only at the epoch its holder was granted: a run claimed again
    since (by another worker, or by a restarted worker of the same id) is not.
    """
    if not leases:
        return set()
    c = tx.t.instances.c
    by_epoch: dict[int, list[str]] = {}
    for instance_id, epoch in leases.items():
        by_epoch.setdefault(int(epoch), []).append(instance_id)
    held = or_(*(and_(c.lease_epoch == e, c.id.in_(ids)) for e, ids in sorted(by_epoch.items())))
    rows = tx.conn.execute(
        update(tx.t.instances)
        .where(held, c.lease_owner == owner)
        .values(lease_expires_at=until)
        .returning(c.id)
    )
    return {str(r) for r in rows.scalars()}


def release(tx: Tx, owner: str, instance_ids: Collection[str]) -> list[tuple[str, datetime | None]]:
    """Give up ``owner``'s leases on these instances; (id, wake_at) of each released one."""
    if not instance_ids:
        return []
    c = tx.t.instances.c
    rows = tx.conn.execute(
        update(tx.t.instances)
        .where(c.id.in_(list(instance_ids)), c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .returning(c.id, c.wake_at)
    )
    return [(str(i), _utc(tx, w)) for i, w in rows]


def release_all(tx: Tx, owner: str, *, keep: Collection[str] = ()) -> int:
    """Give up every lease ``owner`` holds (it stops) but ``keep``'s; how many there were.

    ``keep``: runs whose execution crashed; end those with :func:`expire_all` instead,
    so the next claim counts the crash.
    """
    c = tx.t.instances.c
    query = update(tx.t.instances).where(c.lease_owner == owner)
    if keep:
        query = query.where(c.id.not_in(list(keep)))
    result = tx.conn.execute(query.values(lease_owner=None, lease_expires_at=None))
    return int(result.rowcount)


def expire_all(
    tx: Tx,
    owner: str,
    now: datetime,
    *,
    keep: Collection[str] = (),
    only: Collection[str] | None = None,
) -> int:
    """End every lease ``owner`` holds now (a restarted worker fences its previous self).

    The leases are not released: their runs are claimable at once, and the claim
    counts the interrupted execution as a crash and fences the old holder (new epoch).
    ``keep``: runs the new incarnation executes already; ``only``: just these runs
    (those whose execution crashed in a closing engine).
    """
    c = tx.t.instances.c
    query = update(tx.t.instances).where(c.lease_owner == owner, c.lease_expires_at >= now)
    if keep:
        query = query.where(c.id.not_in(list(keep)))
    if only is not None:
        if not only:
            return 0
        query = query.where(c.id.in_(list(only)))
    result = tx.conn.execute(query.values(lease_expires_at=now - timedelta(microseconds=1)))
    return int(result.rowcount)


def lease_of(tx: Tx, instance_id: str) -> Lease | None:
    """The instance's current lease (None when nobody holds it)."""
    c = tx.t.instances.c
    row = tx.conn.execute(
        select(c.lease_owner, c.lease_epoch, c.lease_expires_at).where(c.id == instance_id)
    ).first()
    if row is None or row[0] is None:
        return None
    expires = _utc(tx, row[2])
    assert expires is not None
    return Lease(owner=str(row[0]), epoch=int(row[1]), expires_at=expires)


def held_by(tx: Tx, owners: Collection[str], now: datetime) -> dict[str, int]:
    """How many live leases each of these owners holds on instances in progress."""
    if not owners:
        return {}
    c = tx.t.instances.c
    query = (
        select(c.lease_owner, func.count())
        .where(c.lease_owner.in_(list(owners)), _live(c, now))
        .group_by(c.lease_owner)
    )
    return {str(o): int(n) for o, n in tx.conn.execute(query)}


def route_of(tx: Tx, instance_id: str) -> dict[str, Any]:
    """Where an instance runs: its ``queue``, ``priority`` and stored ``labels``."""
    c = tx.t.instances.c
    row = tx.conn.execute(select(c.queue, c.priority, c.labels).where(c.id == instance_id)).first()
    if row is None:
        return {}
    return {"queue": row[0], "priority": row[1], "labels": row[2]}


# ------------------------------------------------------------------ workers


def register_worker(tx: Tx, values: dict[str, Any]) -> None:
    """Write a worker's row (id, host, pid, queues, labels, concurrency, times).

    A worker id seen before (a restarted ``pod-0``) takes its row back: the row is
    replaced, whoever wrote it.
    """
    insert = pg_insert if tx.dialect == "postgresql" else sqlite_insert
    changed = {k: v for k, v in values.items() if k != "id"}
    query = insert(tx.t.workers).values(values)
    tx.conn.execute(query.on_conflict_do_update(index_elements=["id"], set_=changed))


def beat(tx: Tx, worker_id: str, now: datetime, held: int) -> None:
    """Record a worker's heartbeat and how many runs it holds."""
    w = tx.t.workers.c
    tx.conn.execute(
        update(tx.t.workers).where(w.id == worker_id).values(heartbeat_at=now, held=held)
    )


def stop_worker(tx: Tx, worker_id: str, now: datetime) -> None:
    """Mark a worker stopped (it exited gracefully)."""
    w = tx.t.workers.c
    tx.conn.execute(update(tx.t.workers).where(w.id == worker_id).values(stopped_at=now, held=0))


def list_workers(tx: Tx, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Workers not stopped (with a heartbeat at or after ``since``), newest first."""
    w = tx.t.workers.c
    query = select(tx.t.workers).where(w.stopped_at.is_(None))
    if since is not None:
        query = query.where(w.heartbeat_at >= since)
    rows = [dict(r._mapping) for r in tx.conn.execute(query.order_by(w.started_at.desc()))]
    for row in rows:
        for key in ("started_at", "heartbeat_at", "stopped_at"):
            row[key] = _utc(tx, row[key])
    return rows


def served_workflows(tx: Tx, since: datetime) -> set[tuple[str, str]]:
    """The (workflow, version) pairs served by workers not stopped, alive at ``since``."""
    w = tx.t.workers.c
    query = select(w.workflows).where(w.stopped_at.is_(None), w.heartbeat_at >= since)
    return {(str(n), str(v)) for (pairs,) in tx.conn.execute(query) for n, v in pairs or []}


def _utc(tx: Tx, value: datetime | None) -> datetime | None:
    return UTCDateTime().process_result_value(value, tx.conn.dialect)
