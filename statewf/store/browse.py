"""Queries for browsing many instances: newest first, several tenants, counts, routes, leases.

Used through :mod:`statewf.browse`; every list is keyset-paginated on
``(created_at, id)`` (newest first) so a page costs the same on the last page as on
the first, and no query counts a whole table except :func:`status_counts`, which
groups on indexed columns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from statewf.records import Instance
from statewf.store.sql import Tx, decode_cursor, encode_cursor, instance_from_row


def list_newest(
    tx: Tx,
    *,
    kind: str | None,
    machine: str | None,
    state: str | None,
    statuses: Sequence[str] | None,
    resource_ids: Collection[str] | None,
    queue: str | None,
    waiting_for: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Instance], str | None]:
    """One page of snapshots, newest first, and the cursor of the next (older) page."""
    c = tx.t.instances.c
    query = select(tx.t.instances)
    for column, value in ((c.kind, kind), (c.machine, machine), (c.queue, queue)):
        if value is not None:
            query = query.where(column == value)
    if state is not None:
        query = query.where(_in_state(c.state, state))
    if statuses:
        query = query.where(c.status.in_(list(statuses)))
    if resource_ids is not None:
        query = query.where(c.resource_id.in_(sorted(resource_ids)))
    if waiting_for is not None:
        event = c.context["waiting"]["event"].as_string()
        query = query.where(event.startswith(waiting_for, autoescape=True))
    if created_after is not None:
        query = query.where(c.created_at >= created_after)
    if created_before is not None:
        query = query.where(c.created_at < created_before)
    if cursor is not None:
        before_time, before_id = decode_cursor(cursor)
        query = query.where(
            or_(c.created_at < before_time, and_(c.created_at == before_time, c.id < before_id))
        )
    order = (c.created_at.desc(), c.id.desc())
    rows = tx.conn.execute(query.order_by(*order).limit(limit + 1)).all()
    items = [instance_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return items, encode_cursor(items[-1].created_at, items[-1].id) if more else None


def _in_state(label: Any, path: str) -> Any:
    """The stored state label (active paths joined by ``,``) has ``path`` or a path under it."""
    return or_(
        label == path,
        label.startswith(f"{path}.", autoescape=True),
        label.startswith(f"{path},", autoescape=True),
        label.endswith(f",{path}", autoescape=True),
        label.contains(f",{path},", autoescape=True),
        label.contains(f",{path}.", autoescape=True),
    )


def status_counts(
    tx: Tx, *, resource_ids: Collection[str] | None
) -> list[tuple[str, str, str, int]]:
    """``(kind, machine, status, count)`` for every group, most numerous first."""
    c = tx.t.instances.c
    query = select(c.kind, c.machine, c.status, func.count()).group_by(c.kind, c.machine, c.status)
    if resource_ids is not None:
        query = query.where(c.resource_id.in_(sorted(resource_ids)))
    rows = tx.conn.execute(query).all()
    found = [(str(k), str(m), str(s), int(n)) for k, m, s, n in rows]
    return sorted(found, key=lambda row: (-row[3], row[:3]))


def routes_of(tx: Tx, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Queue, priority, labels and lease of each of these instances (absent ids left out)."""
    if not ids:
        return {}
    c = tx.t.instances.c
    query = select(
        c.id, c.queue, c.priority, c.labels, c.lease_owner, c.lease_expires_at, c.lease_epoch
    ).where(c.id.in_(list(ids)))
    found: dict[str, dict[str, Any]] = {}
    for row in tx.conn.execute(query):
        values = dict(row._mapping)
        found[str(values.pop("id"))] = values
    return found


def leased_by(
    tx: Tx, owner: str, *, resource_ids: Collection[str] | None, limit: int
) -> list[tuple[str, str, datetime | None]]:
    """``(instance id, machine, lease expiry)`` of instances whose lease ``owner`` holds."""
    c = tx.t.instances.c
    query = select(c.id, c.machine, c.lease_expires_at).where(c.lease_owner == owner)
    if resource_ids is not None:
        query = query.where(c.resource_id.in_(sorted(resource_ids)))
    rows = tx.conn.execute(query.order_by(c.id).limit(limit)).all()
    return [(str(i), str(m), e) for i, m, e in rows]


def of_version(
    tx: Tx, machine: str, version: str, *, after: str | None, limit: int
) -> list[Instance]:
    """Instances of one machine version, by id, after the id ``after`` (a keyset page)."""
    c = tx.t.instances.c
    query = select(tx.t.instances).where(
        c.kind == "machine", c.machine == machine, c.machine_version == version
    )
    if after is not None:
        query = query.where(c.id > after)
    rows = tx.conn.execute(query.order_by(c.id).limit(limit)).all()
    return [instance_from_row(r) for r in rows]


def state_counts(
    tx: Tx, *, machine: str | None, resource_ids: Collection[str] | None
) -> list[tuple[str, str, str, str, int]]:
    """``(machine, version, state, status, count)`` of machine instances, by machine,
    version and state."""
    c = tx.t.instances.c
    columns = (c.machine, c.machine_version, c.state, c.status)
    query = select(*columns, func.count()).where(c.kind == "machine").group_by(*columns)
    if machine is not None:
        query = query.where(c.machine == machine)
    if resource_ids is not None:
        query = query.where(c.resource_id.in_(sorted(resource_ids)))
    rows = tx.conn.execute(query).all()
    return sorted((str(m), str(v), str(s), str(st), int(n)) for m, v, s, st, n in rows)
