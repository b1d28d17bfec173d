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
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    Boolean,
    Insert,
    Integer,
    Select,
    Text,
    Update,
    bindparam,
    case,
    func,
    literal_column,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from statewf.records import Instance, TransitionRecord
from statewf.store.logrows import RECORD_FIELDS
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


#: Log-row fields equal to a snapshot column after the row is applied (``fold.apply``).
ROW_FROM_SNAPSHOT = {
    "instance_id": "id",
    "seq": "version",
    "status": "status",
    "wake_at": "wake_at",
    "created_at": "updated_at",
}
_ROW_PART = attrgetter(*ROW_FROM_SNAPSHOT)
_SNAPSHOT_PART = attrgetter(*ROW_FROM_SNAPSHOT.values())


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


def conditional_update(tables: Tables) -> Update:
    """The snapshot's move, only while it is at ``expected_version`` (``i_`` parameters).

    ``release`` also gives up the instance's lease (a run's final row), in the same
    statement.
    """
    c = tables.instances.c
    release = bindparam("release", type_=Boolean)
    return (
        update(tables.instances)
        .where(c.id == bindparam("i_id"), c.version == bindparam("expected_version"))
        .values(
            {
                **{name: bindparam(f"i_{name}", type_=c[name].type) for name in MUTABLE_FIELDS},
                "lease_owner": case((release, null()), else_=c.lease_owner),
                "lease_expires_at": case((release, null()), else_=c.lease_expires_at),
            }
        )
    )


def log_row_insert(tables: Tables) -> Insert:
    """The log row's ``INSERT``, from the ``t_`` parameters of :func:`conditional_params`."""
    cols = tables.transitions.c
    return tables.transitions.insert().values(
        {name: bindparam(f"t_{name}", type_=cols[name].type) for name in RECORD_FIELDS}
    )


def conditional_writes(tables: Tables, record_fields: Sequence[str]) -> tuple[Insert, Insert]:
    """The send's one-statement write, and the same write also recording its effects.

    The first updates the snapshot only while it is at ``expected_version`` and
    appends the log row from that update (``WITH moved AS (UPDATE ... RETURNING)
    INSERT ... SELECT ... FROM moved``): both or neither. The second appends, from
    the appended row, one outbox row per name in ``e_names`` (PostgreSQL: ``unnest``
    ``WITH ORDINALITY`` gives each its position) and returns their ids: one
    statement, one commit, for a transition with effects.
    """
    t = tables
    c = t.instances.c
    # the row's fields the snapshot holds too are read back from the update (fewer
    # parameters for the driver to dump: 20, not 25)
    from_moved = {name: c[column] for name, column in ROW_FROM_SNAPSHOT.items()}
    moved = conditional_update(t).returning(*from_moved.values()).cte("moved")
    cols = [t.transitions.c[name] for name in record_fields]
    source = select(
        *[
            moved.c[from_moved[col.name].name]
            if col.name in from_moved
            else bindparam(f"t_{col.name}", type_=col.type)
            for col in cols
        ]
    )
    write = (
        t.transitions.insert()
        .from_select(cols, source.select_from(moved))
        .add_cte(moved)
        .returning(t.transitions.c.seq)
    )
    logged = (
        t.transitions.insert()
        .from_select(cols, source.select_from(moved))
        .returning(t.transitions.c.seq)
        .cte("logged")
    )
    e = t.effects.c
    names = (
        func.unnest(bindparam("e_names", type_=ARRAY(Text)))
        .table_valued("name", with_ordinality="ord")
        .render_derived()
        .alias("named")
    )
    rows = select(
        bindparam("e_instance_id", type_=e.instance_id.type),
        logged.c.seq,
        (names.c.ord - literal_column("1")).cast(Integer),
        names.c.name,
        bindparam("e_args", type_=e.args.type),
        literal_column("'pending'"),
        bindparam("e_attempts", type_=Integer),
        bindparam("e_available_at", type_=e.available_at.type),
        bindparam("e_created_at", type_=e.created_at.type),
    ).select_from(logged.join(names, true()))
    effect_cols = [
        e.instance_id,
        e.seq,
        e.position,
        e.name,
        e.args,
        e.status,
        e.attempts,
        e.available_at,
        e.created_at,
    ]
    with_effects = (
        t.effects.insert()
        .from_select(effect_cols, rows)
        .add_cte(moved)
        .add_cte(logged)
        .returning(e.id, e.position)
    )
    return write, with_effects


_MOVED_NAMES = tuple(f"i_{name}" for name in MUTABLE_FIELDS)
_MOVED_VALUES = attrgetter(*MUTABLE_FIELDS)
_RECORD_NAMES = tuple(f"t_{name}" for name in RECORD_FIELDS)
_RECORD_VALUES = attrgetter(*RECORD_FIELDS)


def conditional_params(
    snapshot: Instance, record: TransitionRecord, expected_version: int, release: bool
) -> dict[str, Any]:
    """The parameters of :func:`conditional_writes`' statements (effects' aside).

    Read straight from the models the engine built (no ``model_dump``: the values are
    serialized once, by the driver): ``i_`` the snapshot's moving fields, ``t_`` the
    log row's, with tuples as lists and the configuration as stored.
    """
    if _ROW_PART(record) != _SNAPSHOT_PART(snapshot):
        raise ValueError(
            f"snapshot of {snapshot.id!r} at version {snapshot.version} is not its log row "
            f"{record.seq} applied; build it with statewf.fold.apply"
        )
    params = dict(zip(_MOVED_NAMES, _MOVED_VALUES(snapshot), strict=True))
    params.update(zip(_RECORD_NAMES, _RECORD_VALUES(record), strict=True))
    params["i_id"] = snapshot.id
    params["i_configuration"] = snapshot.stored_configuration()
    params["t_source"] = list(record.source)
    params["t_target"] = list(record.target)
    params["t_context_unset"] = list(record.context_unset)
    params["expected_version"] = expected_version
    params["release"] = release
    return params
