"""Queries for durable workflow runs (the ``durable`` package's only way to the database).

Runs are instances of kind ``"workflow"`` in the ordinary statewf tables; this module
adds what the workflow engine needs beyond :class:`~statewf.store.sql.Tx`: finding
runs to resume, loading a run with its whole log, and handing a transactional step
the open connection.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

import psycopg
import psycopg.sql
from sqlalchemy import Connection as _Connection
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from statewf.records import Instance, ReplayRow, TransitionRecord
from statewf.store import logrows
from statewf.store.schema import UTCDateTime
from statewf.store.sql import SqlStore, Tx, instance_from_row

#: The connection a transactional step receives: a SQLAlchemy Core ``Connection``
#: inside statewf's open transaction. Do not commit or close it.
Connection = _Connection


def load_run(tx: Tx, run_id: str) -> tuple[Instance, list[TransitionRecord]] | None:
    """A run's snapshot and its whole log (one query for the log), or None."""
    snapshot = tx.get_instance(run_id)
    if snapshot is None:
        return None
    return snapshot, run_log(tx, run_id)


def run_log(tx: Tx, run_id: str) -> list[TransitionRecord]:
    """A run's whole log in one query, as records built without re-validation.

    The rows were validated when they were written; replaying a long run should
    cost the query and the JSON decoding, not a pydantic validation per row.
    """
    return run_logs(tx, [run_id]).get(run_id, [])


def run_logs(tx: Tx, run_ids: Sequence[str]) -> dict[str, list[TransitionRecord]]:
    """The whole logs of several runs in one query, by run id (see :func:`run_log`)."""
    if not run_ids:
        return {}
    c = tx.t.transitions.c
    if len(run_ids) == 1:
        (run_id,) = run_ids
        query = logrows.select_rows(tx.t).where(c.instance_id == run_id).order_by(c.seq)
        records = logrows.read(tx.conn, query, run_id)
        return {run_id: records} if records else {}
    query = (
        logrows.select_rows(tx.t, with_instance=True)
        .where(c.instance_id.in_(list(run_ids)))
        .order_by(c.instance_id, c.seq)
    )
    logs: dict[str, list[TransitionRecord]] = {}
    with logrows.gc_paused():
        for record in logrows.read(tx.conn, query):
            logs.setdefault(record.instance_id, []).append(record)
    return logs


def load_replay(
    tx: Tx, run_id: str, light_kind: str, *, snapshots: bool = True
) -> tuple[Instance, list[ReplayRow]] | None:
    """A run's snapshot and its log as replay reads it (see :func:`replay_logs`), or None."""
    snapshot = tx.get_instance(run_id)
    if snapshot is None:
        return None
    return snapshot, replay_logs(tx, [run_id], light_kind, snapshots=snapshots).get(run_id, [])


def replay_logs(
    tx: Tx, run_ids: Sequence[str], light_kind: str, *, snapshots: bool = True
) -> dict[str, list[ReplayRow]]:
    """The whole logs of several runs in one query, for replay: each row of ``light_kind``
    (a run's finished steps) as a :class:`~statewf.records.StepRow`, every other row
    as a full record.

    A step row's configurations and context change are what a replay never reads; left
    on the server, a 10,000-step log comes back in about half the time. With
    ``snapshots``, a run's replay snapshot comes first in place of the rows it covers
    (:func:`write_replay_snapshot`).
    """
    if not run_ids:
        return {}
    c = tx.t.transitions.c
    if len(run_ids) == 1:
        (run_id,) = run_ids
        query = logrows.select_replay(
            tx.t, light_kind, snapshots=snapshots, runs=lambda ids: ids == run_id
        )
        return logrows.read_replay(tx.conn, query.order_by(c.seq), light_kind, run_id)
    query = logrows.select_replay(
        tx.t,
        light_kind,
        with_instance=True,
        snapshots=snapshots,
        runs=lambda ids: ids.in_(list(run_ids)),
    ).order_by(c.instance_id, c.seq)
    return logrows.read_replay(tx.conn, query, light_kind)


def write_replay_snapshot(
    tx: Tx, run_id: str, seq: int, document: str, now: datetime, *, format: int
) -> bool:
    """Store a run's replay snapshot up to ``seq`` (replacing an older one); False when
    the run has one at ``seq`` or later already, or no row at ``seq``.

    A snapshot is derived data: the log is the truth, and a log read for replay takes
    the rows after ``seq`` on top of it. Losing one costs a full read.
    """
    s, c = tx.t.replay_snapshots.c, tx.t.transitions.c
    there = tx.conn.execute(
        select(func.count()).where(c.instance_id == run_id, c.seq == seq)
    ).scalar()
    if not there:
        return False  # never a snapshot past the log: its rows would not be read
    # one statement: of two writers at once (an executor that lost its lease and its
    # successor) the newer snapshot stays, and neither meets a duplicate key
    upsert = (pg_insert if tx.dialect == "postgresql" else sqlite_insert)(tx.t.replay_snapshots)
    values = {"seq": seq, "format": format, "document": document, "created_at": now}
    statement = (
        upsert.values(instance_id=run_id, **values)
        .on_conflict_do_update(
            index_elements=[s.instance_id],
            set_={name: upsert.excluded[name] for name in values},
            where=s.seq < upsert.excluded.seq,
        )
        .returning(s.seq)  # a row only when written (rowcount is -1 here on psycopg)
    )
    return tx.conn.execute(statement).first() is not None


def delete_replay_snapshot(tx: Tx, run_id: str) -> None:
    """Forget a run's replay snapshot: its next resume reads the whole log."""
    s = tx.t.replay_snapshots.c
    tx.conn.execute(delete(tx.t.replay_snapshots).where(s.instance_id == run_id))


def next_wake(
    tx: Tx,
    kind: str,
    versions: Sequence[tuple[str, str]],
    statuses: Sequence[str],
    *,
    exclude: Collection[str] = (),
) -> datetime | None:
    """The earliest ``wake_at`` among these versions' instances in ``statuses``.

    ``exclude`` names runs the caller is executing already: their wake-up time is not
    the caller's to wait for (counting it made the scheduler spin).
    """
    c = tx.t.instances.c
    query = select(func.min(c.wake_at)).where(
        c.kind == kind,
        tuple_(c.machine, c.machine_version).in_([tuple(v) for v in versions]),
        c.status.in_(list(statuses)),
        c.wake_at.is_not(None),
    )
    if exclude:
        query = query.where(c.id.not_in(list(exclude)))
    value = tx.conn.execute(query).scalar()
    return UTCDateTime().process_result_value(value, tx.conn.dialect)


def set_statement_timeout(tx: Tx, seconds: float) -> None:
    """Limit each statement of this transaction to ``seconds`` (PostgreSQL; no-op on SQLite)."""
    if tx.dialect == "postgresql":
        millis = max(1, int(seconds * 1000))
        tx.conn.execute(select(func.set_config("statement_timeout", str(millis), True)))


def wake_channel(store: SqlStore) -> str:
    """The LISTEN/NOTIFY channel that announces due runs of this store's tables."""
    t = store.tables.instances
    return f"statewf_wake_{zlib.crc32(f'{t.schema}.{t.name}'.encode()):08x}"


def notify_wake(store: SqlStore, tx: Tx, run_id: str) -> None:
    """Tell listening schedulers (on PostgreSQL, at commit) that ``run_id`` is due."""
    store.notify(tx, wake_channel(store), run_id)


class WakeListener:
    """A thread that LISTENs for due runs on PostgreSQL and calls ``on_wake``.

    Notifications are hints: the instances table stays the truth, and schedulers
    poll it anyway. On SQLite there is nothing to listen to and this does nothing.
    A lost connection is retried every few seconds.
    """

    def __init__(self, store: SqlStore, on_wake: Callable[[], object]) -> None:
        self._store = store
        self._on_wake = on_wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening (PostgreSQL only)."""
        if self._store.dialect != "postgresql" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="statewf-wake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; the thread closes its connection within a fraction of a second."""
        self._stop.set()
        self._thread = None

    def _run(self) -> None:
        url = self._store.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        channel = wake_channel(self._store)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(
                        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
                    )
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.2, stop_after=1):
                            try:
                                self._on_wake()
                            except RuntimeError:  # the listener's owner is gone
                                self._stop.set()
            except psycopg.Error:
                self._stop.wait(2.0)


def rows_with_key(tx: Tx, row_kind: str, key: str) -> list[tuple[str, dict[str, Any]]]:
    """(instance id, meta) of every log row of kind ``row_kind`` with ``key``, oldest first."""
    c = tx.t.transitions.c
    query = (
        select(c.instance_id, c.meta)
        .where(c.kind == row_kind, c.key == key)
        .order_by(c.instance_id, c.seq)
    )
    return [(row.instance_id, dict(row.meta or {})) for row in tx.conn.execute(query)]


def version_counts(tx: Tx, kind: str, statuses: Sequence[str]) -> dict[tuple[str, str], int]:
    """How many instances of ``kind`` in ``statuses`` each (machine, version) pair has."""
    c = tx.t.instances.c
    query = (
        select(c.machine, c.machine_version, func.count())
        .where(c.kind == kind, c.status.in_(list(statuses)))
        .group_by(c.machine, c.machine_version)
    )
    return {(row[0], row[1]): int(row[2]) for row in tx.conn.execute(query)}


def instances_of_versions(
    tx: Tx, kind: str, versions: Sequence[tuple[str, str]], statuses: Sequence[str], limit: int
) -> list[Instance]:
    """Up to ``limit`` instances of these (machine, version) pairs in ``statuses``, oldest first."""
    if not versions:
        return []
    c = tx.t.instances.c
    query = (
        select(tx.t.instances)
        .where(
            c.kind == kind,
            tuple_(c.machine, c.machine_version).in_([tuple(v) for v in versions]),
            c.status.in_(list(statuses)),
        )
        .order_by(c.created_at, c.id)
        .limit(limit)
    )
    return [instance_from_row(row) for row in tx.conn.execute(query)]
