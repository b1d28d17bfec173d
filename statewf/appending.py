"""Appending to the transition log: the one way every writer moves an instance.

A write appends log rows and moves the instance row to the snapshot those rows
imply, in the caller's transaction, conditional on the version the writer read (a
writer that lost a race changes nothing and gets
:class:`~statewf.errors.ConcurrencyConflict`). Machines (events, timers), durable
runs (steps, operator actions, claims) and run creation all write through
:func:`append`; :func:`next_row` builds the next row on top of a snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statewf.fold import apply
from statewf.records import Instance, TransitionRecord
from statewf.store import Tx


@dataclass(frozen=True)
class Move:
    """An instance row to write: the snapshot after the new rows, and the version read.

    ``after`` is the version the writer read (the update applies only if the row is
    still there); None inserts a new instance. ``columns`` are extra instance columns
    (a lease, a route).
    """

    snapshot: Instance
    after: int | None
    columns: Mapping[str, Any] = field(default_factory=dict)


def append(tx: Tx, records: Sequence[TransitionRecord], *moves: Move) -> bool:
    """Write each move's instance row and append ``records`` (one statement), in ``tx``.

    False, with nothing written, when a new instance's id or key exists already.
    """
    for move in moves:
        if move.after is None:
            if not tx.insert_instance(move.snapshot, **move.columns):
                return False
        else:
            tx.update_instance(move.snapshot, move.after, **move.columns)
    tx.append(records)
    return True


def next_row(snapshot: Instance, now: datetime, **fields: Any) -> tuple[TransitionRecord, Instance]:
    """The row built from ``fields`` on top of ``snapshot``, and the snapshot it implies."""
    record = TransitionRecord(
        instance_id=snapshot.id,
        seq=snapshot.version + 1,
        source=snapshot.configuration,
        created_at=now,
        **fields,
    )
    return record, apply(snapshot, record)


def append_row(tx: Tx, snapshot: Instance, now: datetime, **fields: Any) -> Instance:
    """Append one row built from ``fields`` on top of ``snapshot`` (locked); the new snapshot."""
    record, new = next_row(snapshot, now, **fields)
    append(tx, [record], Move(new, snapshot.version))
    return new
