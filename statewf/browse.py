"""Browsing many instances and runs, newest first, for dashboards and operators.

:meth:`Engine.list <statewf.Engine.list>` pages oldest first for one resource; a
screen that shows what happens *now* wants the newest first, several tenants at
once (``resource_ids``), a queue, or runs waiting for a kind of event. These
functions read through the engine's store and add nothing to it::

    page = statewf.browse.newest(engine, kind="machine", resource_ids={"acme"}, limit=20)
    older = statewf.browse.newest(engine, kind="machine", cursor=page.next_cursor)

``resource_ids=None`` means every resource; an empty set means none.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from statewf.engine import Engine
from statewf.errors import InvalidInput
from statewf.records import Instance, Page
from statewf.store import browse as queries
from statewf.store.sql import MAX_PAGE


class StatusCount(BaseModel):
    """How many instances of one machine (or workflow) are in one status."""

    model_config = ConfigDict(frozen=True)

    kind: str
    machine: str
    status: str
    count: int


class StateCount(BaseModel):
    """How many instances of one machine version are in one state."""

    model_config = ConfigDict(frozen=True)

    machine: str
    version: str
    state: str
    status: str
    count: int
    registered: bool = Field(description="whether the engine asked has this version registered")


def _check_text(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or "\x00" in value):
        raise InvalidInput(f"filter {name} must be a string without NUL characters, got {value!r}")


def newest(
    engine: Engine,
    *,
    kind: str | None = None,
    machine: str | None = None,
    state: str | None = None,
    status: str | Sequence[str] | None = None,
    resource_ids: Collection[str] | None = None,
    queue: str | None = None,
    waiting_for: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Instance]:
    """A page of instances, newest first, and the cursor of the next (older) page.

    ``state`` keeps instances in that state: for a statechart, with that path or a
    path under it in their configuration (``"shipping"`` matches ``"shipping.packing"``).
    ``waiting_for`` keeps runs whose wait's event starts with that text
    (``"approval:"`` for approvals).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE} (an int), got {limit!r}")
    statuses = [status] if isinstance(status, str) else list(status or [])
    for name, value in (
        ("kind", kind),
        ("machine", machine),
        ("state", state),
        ("queue", queue),
        ("waiting_for", waiting_for),
        *(("status", s) for s in statuses),
        *(("resource_ids", r) for r in resource_ids or ()),
    ):
        _check_text(name, value)
    for name, when in (("created_after", created_after), ("created_before", created_before)):
        if when is not None and (not isinstance(when, datetime) or when.tzinfo is None):
            raise InvalidInput(f"{name} must be a timezone-aware datetime, got {when!r}")
    if resource_ids is not None and not resource_ids:
        return Page[Instance](items=[])
    with engine.store.transaction(readonly=True) as tx:
        items, next_cursor = queries.list_newest(
            tx,
            kind=kind,
            machine=machine,
            state=state,
            statuses=statuses,
            resource_ids=resource_ids,
            queue=queue,
            waiting_for=waiting_for,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )
    return Page[Instance](items=items, next_cursor=next_cursor)


def status_counts(
    engine: Engine, *, resource_ids: Collection[str] | None = None
) -> list[StatusCount]:
    """Instances counted by kind, machine and status, most numerous first."""
    if resource_ids is not None and not resource_ids:
        return []
    with engine.store.transaction(readonly=True) as tx:
        rows = queries.status_counts(tx, resource_ids=resource_ids)
    return [StatusCount(kind=k, machine=m, status=s, count=n) for k, m, s, n in rows]


def state_counts(
    engine: Engine, *, machine: str | None = None, resource_ids: Collection[str] | None = None
) -> list[StateCount]:
    """Machine instances counted by machine, version and state (a version this engine has
    not registered is ``registered=False``: its instances need that version, or a migration)."""
    _check_text("machine", machine)
    if resource_ids is not None and not resource_ids:
        return []
    registered = {(m.name, m.version) for m in engine.machines()}
    with engine.store.transaction(readonly=True) as tx:
        rows = queries.state_counts(tx, machine=machine, resource_ids=resource_ids)
    return [
        StateCount(
            machine=m, version=v, state=s, status=st, count=n, registered=(m, v) in registered
        )
        for m, v, s, st, n in rows
    ]


def routes(engine: Engine, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Queue, priority, labels and lease (owner, expiry, epoch) of each instance id."""
    with engine.store.transaction(readonly=True) as tx:
        return queries.routes_of(tx, ids)


def leased_by(
    engine: Engine,
    owner: str,
    *,
    resource_ids: Collection[str] | None = None,
    limit: int = 100,
) -> list[tuple[str, str, datetime | None]]:
    """``(instance id, machine, lease expiry)`` of the instances a worker holds leases on."""
    if resource_ids is not None and not resource_ids:
        return []
    with engine.store.transaction(readonly=True) as tx:
        return queries.leased_by(tx, owner, resource_ids=resource_ids, limit=limit)
