"""Statements built once per set of tables, executed with parameters on every call.

Building a SQLAlchemy statement (``select(...).where(c.id == value)``,
``update(...).values(...)``) and computing its cache key cost more CPU than running
it on SQLite and about as much as the round trip on PostgreSQL (a profile of a send
on an SQLite file: ~0.7 of its 0.7 ms of CPU in the store, most of it building). The
statements of every locked transition (read the snapshot, move it, append its rows)
are built here once, with bind parameters, and served from SQLAlchemy's compiled
cache afterwards.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Select, Update, bindparam, select, update

from statewf.store.schema import Tables

#: Snapshot columns a transition may change (the rest are fixed at creation).
MUTABLE_FIELDS = (
    "machine_version",
    "state",
    "configuration",
    "context",
    "status",
    "version",
    "wake_at",
    "updated_at",
)


@dataclass(frozen=True)
class Statements:
    """The prebuilt statements of one :class:`~statewf.store.schema.Tables`."""

    get_instance: Select[Any]
    get_instance_locked: Select[Any]
    update_instance: Update
    append: Insert
    add_effects: Insert
    #: an effect's outcome, by kind: ``done``, ``dead``, ``retry``
    finish_effect: dict[str, Update]


@functools.lru_cache(maxsize=64)
def statements(tables: Tables) -> Statements:
    """The statements for ``tables`` (built on first use, then shared by every ``Tx``)."""
    t = tables.instances
    c = t.c
    get = select(t).where(c.id == bindparam("id"))
    move = (
        update(t)
        .where(c.id == bindparam("w_id"), c.version == bindparam("w_expected_version"))
        .values({name: bindparam(name, type_=c[name].type) for name in MUTABLE_FIELDS})
    )
    e = tables.effects.c
    finish = (
        update(tables.effects)
        # a success reported late still wins over a "presumed dead" mark
        .where(e.id == bindparam("f_id"), e.attempts == bindparam("f_attempt"), e.status != "done")
        .returning(e.id)
    )
    now = bindparam("f_now", type_=e.done_at.type)
    error = bindparam("f_error", type_=e.last_error.type)
    return Statements(
        get_instance=get,
        get_instance_locked=get.with_for_update(),
        update_instance=move,
        append=tables.transitions.insert(),
        add_effects=tables.effects.insert().returning(e.id, e.position),
        finish_effect={
            "done": finish.values(status="done", done_at=now, last_error=None),
            "dead": finish.values(status="dead", done_at=now, last_error=error),
            "retry": finish.values(
                available_at=bindparam("f_retry_at", type_=e.available_at.type), last_error=error
            ),
        },
    )
