"""A claim on PostgreSQL pipelined on the store's kept connections: three short round trips.

The general claim (:mod:`statewf.store.leases`, under one SQLAlchemy transaction) sends
``BEGIN``, the database's clock, the candidates' ``SELECT ... FOR UPDATE SKIP LOCKED``,
the clock again, one ``UPDATE`` per run, the claim rows, the logs and ``COMMIT``: seven
round trips with statements built in Python between them. Here the same transaction
is pipelined on one kept connection (:class:`~statewf.store.postgres.FastPath`):

1. ``BEGIN`` (the driver's own, as for any transaction), then the candidates' select,
   which reads the database's clock itself (once before its locks, for the leases
   and due waits; per locked row after them, for the rows' time);
2. after the caller decided in Python what to write: one conditional write per run
   (its snapshot with the new lease, and its log row from that update), the claimed
   runs' logs, the scheduler's next wake-up if asked, and ``COMMIT``, in one round
   trip.

The rows stay locked from the select to the commit, as in the general claim, so every
guarantee of that claim holds here (another claimer skips them; a previous holder's
write, conditional on the version, fails after the commit). The statements are built
once per set of tables and prepared by the server; their parameters go as text the
statements cast (lists as array literals, JSON as its text), which psycopg passes on
without its per-element adaptation. Flow-control limits are not taken
here (their counts need the advisory lock and reads of their own): that claim stays
the general one, as does every claim on SQLite or on an application's own engine.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import pydantic_core
from sqlalchemy import (
    JSON,
    Boolean,
    Integer,
    String,
    all_,
    and_,
    any_,
    bindparam,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import ClauseElement

from statewf.errors import ConcurrencyConflict
from statewf.records import Instance, ReplayRow, TransitionRecord
from statewf.store import driver_errors, logrows, prebuilt
from statewf.store.leases import EXECUTING, WAKEABLE, Claimable, ClaimScope
from statewf.store.pg_write import text_array
from statewf.store.schema import Tables
from statewf.store.sql import SqlStore
from statewf.store.tx import INSTANCE_FIELDS

_TIMES = ("wake_at", "created_at", "updated_at")
_INSTANCE_FIELDS = INSTANCE_FIELDS  # the snapshot's columns, as Instance takes them

T = TypeVar("T")


@dataclass(frozen=True)
class Found:
    """What the first round trip locked, with the database's clock around its locks."""

    candidates: list[Claimable]
    #: the database's clock before the locks (leases, and due waits on the wall clock)
    lease_now: datetime
    #: the database's clock after the last lock (rows stamped on the wall clock)
    locked_at: datetime


@dataclass(frozen=True)
class ClaimWrite:
    """One locked run's new snapshot and log row, and the lease it is left with."""

    snapshot: Instance
    record: TransitionRecord
    expected_version: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    #: None: the run keeps its epoch
    lease_epoch: int | None


@dataclass(frozen=True)
class _Statements:
    """The claim's statements as PostgreSQL SQL, compiled once per set of tables."""

    candidates: str
    candidates_one: str
    write: str
    logs: str
    #: the logs read for replay (rows of the parameter ``light_kind`` read light)
    logs_replay: str
    next_wake: str
    columns: tuple[str, ...]
    #: JSON parameters of the write (sent as JSON text; the statement casts each)
    json_params: tuple[str, ...]


@dataclass(frozen=True)
class Expressions:
    """The claim's statements as SQLAlchemy expressions (compiled by each driver path)."""

    candidates: ClauseElement
    candidates_one: ClauseElement
    write: ClauseElement
    logs: ClauseElement
    #: the logs read for replay: rows of the parameter ``light_kind`` as step rows
    logs_replay: ClauseElement
    #: ``logs_replay`` of the candidates' locking select's runs (their rows, locked
    #: again by this transaction): the logs read with the candidates, before the writes
    logs_locked: ClauseElement
    next_wake: ClauseElement
    #: a holder's leases on some runs given up: (id, wake_at) of each released one
    release: ClauseElement
    columns: tuple[str, ...]
    json_params: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _statements(tables: Tables, dialect: Dialect) -> _Statements:
    built = expressions(tables)
    return _Statements(
        candidates=str(built.candidates.compile(dialect=dialect)),
        candidates_one=str(built.candidates_one.compile(dialect=dialect)),
        write=str(built.write.compile(dialect=dialect)),
        logs=str(built.logs.compile(dialect=dialect)),
        logs_replay=str(built.logs_replay.compile(dialect=dialect)),
        next_wake=str(built.next_wake.compile(dialect=dialect)),
        columns=built.columns,
        json_params=built.json_params,
    )


@functools.lru_cache(maxsize=64)
def expressions(tables: Tables) -> Expressions:
    """The claim's statements for these tables: the candidates' locking select (all, or
    ``only`` one), the conditional write of one run, the runs' logs, the next wake-up,
    and a holder's release of its leases."""
    t = tables.instances
    c = t.c
    texts = ARRAY(String)
    clock = select(func.clock_timestamp().label("now")).cte("clock")
    lease_now = select(clock.c.now).scalar_subquery()
    due_at = func.coalesce(bindparam("due_at", type_=c.wake_at.type), lease_now)
    versions = select(
        func.unnest(bindparam("v_names", type_=texts)),
        func.unnest(bindparam("v_versions", type_=texts)),
    )
    query = (
        select(t, lease_now.label("lease_now"), func.clock_timestamp().label("locked_at"))
        .where(
            c.kind == bindparam("kind"),
            tuple_(c.machine, c.machine_version).in_(versions),
            or_(
                c.status == any_(bindparam("run_statuses", type_=texts)),
                and_(
                    c.status == any_(bindparam("wake_statuses", type_=texts)), c.wake_at <= due_at
                ),
            ),
            or_(
                c.lease_owner.is_(None),
                c.lease_expires_at < lease_now,
                and_(
                    c.lease_owner == bindparam("owner"),
                    c.id == any_(bindparam("own", type_=texts)),
                ),
            ),
            or_(c.labels.is_(None), c.labels.op("<@")(bindparam("offered", type_=JSONB))),
            or_(
                bindparam("any_queue", type_=Boolean),
                c.queue == any_(bindparam("queues", type_=texts)),
            ),
            c.id != all_(bindparam("exclude", type_=texts)),
        )
        .order_by(c.priority.desc(), c.updated_at, c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True, of=t)
    )
    one = query.where(c.id == bindparam("only"))
    waiting = select(func.min(c.wake_at)).where(
        c.kind == bindparam("kind"),
        tuple_(c.machine, c.machine_version).in_(versions),
        c.status == any_(bindparam("waiting_statuses", type_=texts)),
        c.wake_at.is_not(None),
        c.id != all_(bindparam("exclude", type_=texts)),
    )
    moved = (
        update(t)
        .where(c.id == bindparam("i_id"), c.version == bindparam("expected_version"))
        .values(
            {
                **{name: bindparam(f"i_{name}") for name in prebuilt.MUTABLE_FIELDS},
                "lease_owner": bindparam("l_owner", type_=c.lease_owner.type),
                "lease_expires_at": bindparam("l_expires_at", type_=c.lease_expires_at.type),
                # None: the epoch stays (a dead letter ends the lease, it grants none)
                "lease_epoch": func.coalesce(bindparam("l_epoch", type_=Integer), c.lease_epoch),
            }
        )
        .returning(c.id)
        .cte("moved")
    )
    log = tables.transitions
    cols = [log.c[name] for name in logrows.RECORD_FIELDS]
    # the row's instance id is the updated row's: a write that updated nothing would
    # insert a NULL id, which fails and rolls the whole claim back before its commit
    single = select(literal_column("1").label("one")).subquery("one")
    source = select(
        moved.c.id,
        *[bindparam(f"t_{col.name}", type_=col.type) for col in cols if col.name != "instance_id"],
    ).select_from(single.outerjoin(moved, true()))
    write = log.insert().from_select(cols, source).add_cte(moved)
    logs = (
        logrows.select_rows(tables, with_instance=True)
        .where(log.c.instance_id == any_(bindparam("ids", type_=texts)))
        .order_by(log.c.instance_id, log.c.seq)
    )
    logs_replay = logrows.select_replay(
        tables, "", with_instance=True, runs=lambda ids: ids == any_(bindparam("ids", type_=texts))
    ).order_by(log.c.instance_id, log.c.seq)
    # the same select, the same parameters: the runs this transaction holds come back
    # (its own locks do not stop it), others' locked rows are skipped again
    locked = select(query.subquery("candidate").c.id).cte("locked")
    logs_locked = logrows.select_replay(
        tables, "", with_instance=True, runs=lambda ids: ids.in_(select(locked.c.id))
    ).order_by(log.c.instance_id, log.c.seq)
    json_params = tuple(
        f"{prefix}_{col.name}"
        for prefix, table in (("i", t), ("t", log))
        for col in table.c
        if col.name in (*prebuilt.MUTABLE_FIELDS, *logrows.RECORD_FIELDS)
        and isinstance(col.type, JSON)
    )
    return Expressions(
        candidates=query,
        candidates_one=one,
        write=write,
        logs=logs,
        logs_replay=logs_replay,
        logs_locked=logs_locked,
        next_wake=waiting,
        release=update(t)
        .where(c.id == any_(bindparam("ids", type_=texts)), c.lease_owner == bindparam("owner"))
        .values(lease_owner=null(), lease_expires_at=null())
        .returning(c.id, c.wake_at),
        columns=(*(col.name for col in t.c), "lease_now", "locked_at"),
        json_params=json_params,
    )


def available(store: SqlStore) -> bool:
    """Whether claims on this store can take this path (PostgreSQL, statewf's own pools)."""
    return store.fast_path is not None


def claim(
    store: SqlStore,
    scope: ClaimScope,
    *,
    due_at: datetime | None,
    limit: int,
    exclude: Collection[str],
    only: str | None,
    decide: Callable[[Found], Sequence[ClaimWrite]],
    next_wake: bool = False,
    light_kind: str | None = None,
) -> tuple[dict[str, list[ReplayRow]], datetime | None]:
    """Lock up to ``limit`` runs ``scope`` allows, write what ``decide`` makes of them,
    commit; the logs of the runs written, by id (empty: nothing locked or written),
    and with ``next_wake`` the earliest ``wake_at`` of the runs ``scope`` covers left
    waiting (``exclude``'s aside), read after the writes in the same round trip.
    With ``light_kind`` the logs are read for replay: that kind's rows as
    :class:`~statewf.records.StepRow` (see :func:`statewf.store.runs.replay_logs`).

    ``due_at`` decides which waits are due (None: the database's clock, as the
    leases). ``decide`` runs between the two round trips with the runs locked; the
    writes it returns are each conditional on the version read (a miss, which the
    locks rule out, rolls everything back as a :class:`ConcurrencyConflict`).
    """
    fast = store.fast_path
    if fast is None:
        raise RuntimeError("pgclaim.claim needs PostgreSQL on statewf's own pools")
    if not scope.versions:
        return {}, None
    built = _statements(store.tables, store.engine.dialect)
    params = candidate_params(scope, due_at, limit, exclude, only)
    sql = built.candidates if only is None else built.candidates_one
    lock = limit > 0 and (scope.executing or scope.due)
    if not lock and not next_wake:
        return {}, None

    def work(
        cur: psycopg.Cursor[Any],
    ) -> tuple[dict[str, list[ReplayRow]], datetime | None]:
        conn = cur.connection
        # the kept connection is in autocommit: for this claim the driver opens the
        # transaction itself (BEGIN goes ahead of the first statement) and commits it
        conn.autocommit = False
        try:
            return pipelined(conn, cur)
        except BaseException:
            _roll_back(conn)
            raise
        finally:
            _back_to_autocommit(conn)

    def pipelined(
        conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]
    ) -> tuple[dict[str, list[ReplayRow]], datetime | None]:
        writes: Sequence[ClaimWrite] = ()
        with conn.pipeline():
            if lock:
                cur.execute(sql, params, prepare=True)
                locked = found(built.columns, cur.fetchall())  # BEGIN, then the select
                writes = decide(locked) if locked is not None else ()
            for write in writes:
                cur.execute(built.write, write_params(built.json_params, write), prepare=True)
            if writes:
                logs = conn.cursor()
                ids = [w.snapshot.id for w in writes]
                if light_kind is None:
                    logs.execute(built.logs, {"ids": ids}, prepare=True)
                else:
                    replay = {"ids": ids, logrows.LIGHT_KIND: light_kind}
                    logs.execute(built.logs_replay, replay, prepare=True)
            if next_wake:
                waiting = conn.cursor()
                waiting.execute(built.next_wake, params, prepare=True)
            conn.commit()  # the writes, the reads after them and COMMIT: one round trip
        wake = utc(waiting.fetchone()[0]) if next_wake else None  # type: ignore[index]
        if not writes:
            return {}, wake
        return logs_by_run(logs.fetchall(), light_kind), wake

    return run_claim(store, work)


def run_claim(store: SqlStore, work: Callable[[psycopg.Cursor[Any]], T]) -> T:
    """``work`` (a claim) on one of the store's kept connections, its driver errors as
    statewf's: a run that changed while it was claimed is a :class:`ConcurrencyConflict`."""
    fast = store.fast_path
    assert fast is not None
    try:
        return fast.run(work)
    except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation) as exc:
        raise ConcurrencyConflict(
            "a claimed run changed while it was being claimed; claim again"
        ) from exc
    except psycopg.Error as exc:
        raise driver_errors.wrap_driver(exc, store.url) from exc
    except DBAPIError as exc:  # no connection to be had
        raise driver_errors.wrap(exc, store.url, store.tables.transitions.name) from exc


def logs_by_run(rows: Sequence[Any], light_kind: str | None = None) -> dict[str, list[ReplayRow]]:
    """The claimed runs' log rows (the ``logs`` statement's, as the driver returns them;
    with ``light_kind`` the ``logs_replay`` statement's) as records, by run id."""
    if light_kind is not None:
        return logrows.replay_records(rows, light_kind)
    by_run: dict[str, list[ReplayRow]] = {}
    for record in logrows.records(rows):
        by_run.setdefault(record.instance_id, []).append(record)
    return by_run


def candidate_params(
    scope: ClaimScope,
    due_at: datetime | None,
    limit: int,
    exclude: Collection[str],
    only: str | None,
) -> dict[str, Any]:
    """The parameters of the candidates' and the next wake-up's statements."""
    return {
        "kind": scope.kind,
        "v_names": text_array(name for name, _ in scope.versions),
        "v_versions": text_array(version for _, version in scope.versions),
        "run_statuses": text_array(EXECUTING if scope.executing else ()),
        "wake_statuses": text_array(WAKEABLE if scope.due else ()),
        "waiting_statuses": text_array(WAKEABLE),
        "due_at": due_at,
        "owner": scope.owner,
        "own": text_array(scope.own if scope.owner is not None else ()),
        "offered": _json_text(sorted(scope.labels)),
        "any_queue": scope.queues is None,
        "queues": text_array(scope.queues or ()),
        "exclude": text_array(exclude),
        "limit": limit,
        "only": only,
    }


def _json_text(value: Any) -> str:
    """A JSON parameter as text (the statement casts it to json or jsonb)."""
    return pydantic_core.to_json(value).decode()


def found(columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> Found | None:
    """The locked candidates, best first, and the clock around their locks (None: none)."""
    if not rows:
        return None
    names = columns
    candidates = []
    locked_at = None
    for row in rows:
        m = dict(zip(names, row, strict=True))
        for column in _TIMES:
            if m[column] is not None:
                m[column] = m[column].astimezone(UTC)
        expiry = m["lease_expires_at"]
        candidates.append(
            Claimable(
                instance=Instance(**{f: m[f] for f in _INSTANCE_FIELDS}),
                queue=m["queue"],
                previous_owner=m["lease_owner"],
                previous_expiry=expiry.astimezone(UTC) if expiry is not None else None,
                previous_epoch=int(m["lease_epoch"]),
            )
        )
        stamp = m["locked_at"].astimezone(UTC)
        locked_at = stamp if locked_at is None else max(locked_at, stamp)
    lease_now = dict(zip(names, rows[0], strict=True))["lease_now"].astimezone(UTC)
    assert locked_at is not None
    return Found(candidates, lease_now, locked_at)


def utc(value: datetime | None) -> datetime | None:
    """An instant from the driver in UTC (None stays None)."""
    return value.astimezone(UTC) if value is not None else None


def write_params(json_params: tuple[str, ...], write: ClaimWrite) -> dict[str, Any]:
    """The parameters of one run's conditional write, its JSON ones as text."""
    params = prebuilt.conditional_params(
        write.snapshot, write.record, write.expected_version, False
    )
    params["l_owner"] = write.lease_owner
    params["l_expires_at"] = write.lease_expires_at
    params["l_epoch"] = write.lease_epoch
    for name in json_params:
        value = params.get(name)
        if value is not None:
            params[name] = _json_text(value)
    return params


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End the transaction on an error (the connection is kept only when idle)."""
    with contextlib.suppress(psycopg.Error):
        if not conn.closed:
            conn.rollback()


def _back_to_autocommit(conn: psycopg.Connection[Any]) -> None:
    """Put the kept connection back in autocommit, or close it: one left outside
    autocommit must never serve the fast path's one-statement writes again."""
    try:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.autocommit = True
            return
    except psycopg.Error:
        pass
    conn.close()
