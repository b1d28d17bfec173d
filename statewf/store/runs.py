"""Queries for durable workflow runs (the ``durable`` package's only way to the database).

Runs are instances of kind ``"workflow"`` in the ordinary statewf tables; this module
adds what the workflow engine needs beyond :class:`~statewf.store.sql.Tx`: finding
runs to resume, loading a run with its whole log, and handing a transactional step
the open connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection as _Connection
from sqlalchemy import func, select

from statewf.records import Instance, TransitionRecord
from statewf.store.schema import UTCDateTime
from statewf.store.sql import Tx, instance_from_row

#: The connection a transactional step receives: a SQLAlchemy Core ``Connection``
#: inside statewf's open transaction. Do not commit or close it.
Connection = _Connection


def load_run(tx: Tx, run_id: str) -> tuple[Instance, list[TransitionRecord]] | None:
    """A run's snapshot and its whole log (one query for the log), or None."""
    snapshot = tx.get_instance(run_id)
    if snapshot is None:
        return None
    return snapshot, tx.log(run_id)


def runs_in_status(
    tx: Tx,
    kind: str,
    statuses: Sequence[str],
    *,
    machines: Sequence[str] | None = None,
    limit: int = 1000,
    after_id: str | None = None,
) -> list[Instance]:
    """Instances of ``kind`` in one of ``statuses``, by id (keyset-paged by ``after_id``)."""
    c = tx.t.instances.c
    query = select(tx.t.instances).where(c.kind == kind, c.status.in_(list(statuses)))
    if machines is not None:
        query = query.where(c.machine.in_(list(machines)))
    if after_id is not None:
        query = query.where(c.id > after_id)
    rows = tx.conn.execute(query.order_by(c.id).limit(limit)).all()
    return [instance_from_row(r) for r in rows]


def claim_due_runs(
    tx: Tx,
    kind: str,
    machines: Sequence[str],
    statuses: Sequence[str],
    now: datetime,
    *,
    limit: int = 50,
) -> list[Instance]:
    """Lock the due instances (``wake_at <= now``) of these machines, earliest first.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: schedulers in several processes each
    get different instances and never wait on each other. SQLite's write lock
    (``BEGIN IMMEDIATE``) serializes them instead.
    """
    c = tx.t.instances.c
    query = (
        select(tx.t.instances)
        .where(
            c.kind == kind,
            c.machine.in_(list(machines)),
            c.status.in_(list(statuses)),
            c.wake_at <= now,
        )
        .order_by(c.wake_at, c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [instance_from_row(r) for r in tx.conn.execute(query)]


def next_wake(tx: Tx, kind: str, machines: Sequence[str]) -> datetime | None:
    """The earliest ``wake_at`` among instances of these machines (None if none waits)."""
    c = tx.t.instances.c
    query = select(func.min(c.wake_at)).where(
        c.kind == kind, c.machine.in_(list(machines)), c.wake_at.is_not(None)
    )
    value = tx.conn.execute(query).scalar()
    return UTCDateTime().process_result_value(value, tx.conn.dialect)


def set_statement_timeout(tx: Tx, seconds: float) -> None:
    """Limit each statement of this transaction to ``seconds`` (PostgreSQL; no-op on SQLite)."""
    if tx.dialect == "postgresql":
        millis = max(1, int(seconds * 1000))
        tx.conn.execute(select(func.set_config("statement_timeout", str(millis), True)))
