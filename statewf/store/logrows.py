"""Reading log rows fast: one text of JSON per row, decoded a block of rows at a time.

A long run's log is read whole on every resume and by ``history()``. Decoding six
JSON columns per row through the driver (one ``json.loads`` each) and building each
record through pydantic cost ~40 µs a row; here the server joins each row's six JSON
texts into one (the stored texts as they are: nothing is parsed or rendered there),
one JSON array of a block's documents is decoded at once (by
:func:`~statewf.store.jsondecode.loads`: the values ``json.loads``, the parser the
driver used, gives), and the records are built directly: the rows were validated
when they were written. The cyclic collector is paused while a log is read and
built. :func:`select_replay` reads a run's log for replay: its step rows as
:class:`~statewf.records.StepRow` (what replay reads of them), the others whole.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
)

from statewf.records import ReplayRow, ReplaySnapshot, StepRow, TransitionRecord
from statewf.store.jsondecode import loads
from statewf.store.schema import Tables

#: The instants of a log row: read as the driver gives them, made UTC here.
_TIMES = frozenset({"wake_at", "created_at"})
#: The plain columns of a log row, fetched as they are, in this order.
PLAIN = ("seq", "kind", "event", "status", "wake_at", "key", "created_at")
#: The JSON columns, joined into one text per row in this order (after :data:`PLAIN`).
JSON_COLUMNS = ("source", "target", "payload", "context_set", "context_unset", "meta")
_FIELDS = tuple(TransitionRecord.model_fields)
#: The fields-set of every record read here (all fields were stored): one set shared
#: by all of them, not one per row. pydantic copies it before changing it
#: (``model_copy``), a frozen record is never assigned to, and holding every field it
#: is never added to: sharing it is what :meth:`~pydantic.BaseModel.model_construct`
#: with every field would give, minus a 14-element set per row.
_ALL_SET = set(_FIELDS)
#: A record's ``__dict__`` with every field, in the model's order, to be copied.
_TEMPLATE: dict[str, Any] = dict.fromkeys(_FIELDS)
_new = object.__new__
_set = object.__setattr__
#: Rows decoded and built together (:func:`records`): one block's documents and records
#: fit in the processor's cache while they are built, where 10,000 rows' did not.
BLOCK = 500


def select_rows(tables: Tables, *, with_instance: bool = False) -> Select[Any]:
    """``SELECT`` of log rows with their JSON columns as text (add the WHERE and ORDER BY).

    The instance id is left out unless ``with_instance`` (then it is the last column):
    the log of one instance does not need it 10,000 times over the wire.
    """
    c = tables.transitions.c
    plain = [
        type_coerce(c[name], DateTime()).label(name) if name in _TIMES else c[name]
        for name in PLAIN
    ]
    columns = [*plain, documents(tables, JSON_COLUMNS).label("documents")]
    if with_instance:
        columns.append(c.instance_id)
    return select(*columns)


def documents(tables: Tables, names: Sequence[str]) -> Any:
    """One text column: the JSON array of these JSON columns, as the server holds them.

    The server joins the columns' texts (no JSON is parsed or rendered there), so the
    driver builds one string per row instead of six and one decode reads them.
    """
    c = tables.transitions.c
    # constants written into the SQL, not bound: a statement compiled to text once
    # (the claim's, say) then needs no parameters for them
    text: Any = literal_column("'['", Text)
    for i, name in enumerate(names):
        value: Any = cast(c[name], Text)
        if c[name].nullable:
            value = func.coalesce(value, literal_column("'null'", Text))
        text = text + value + literal_column("','" if i < len(names) - 1 else "']'", Text)
    return text


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off while a long log is read and built.

    Tens of thousands of new containers would run it many times over a heap that
    only grows here (and every pass walks the whole heap); it runs again after.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def read(
    conn: Connection,
    query: Select[Any],
    instance_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> list[TransitionRecord]:
    """Run a :func:`select_rows` query (with ``params``, if any) and build its records,
    the collector paused.

    ``instance_id`` is the one instance the rows belong to; without it the query must
    have been built ``with_instance``.
    """
    with gc_paused():
        return records(conn.execute(query, params).all(), instance_id)


def records(
    rows: Sequence[Sequence[Any]], instance_id: str | None = None
) -> list[TransitionRecord]:
    """Log records from rows of :func:`select_rows`, in order, with one JSON decode a block."""
    if not rows:
        return []
    with gc_paused():
        out: list[TransitionRecord] = []
        append = out.append
        record_type, fields_set, utc = TransitionRecord, _ALL_SET, UTC
        copy_template = _TEMPLATE.copy
        # a row's source is, most often, the row before's target: one shared tuple
        # (immutable) then, so fewer objects for the collector
        before: list[str] | None = None
        moved: tuple[str, ...] = ()
        # a block's documents decoded, then its records built, then the next block:
        # what one block allocates is still in the processor's cache when it is read
        for start in range(0, len(rows), BLOCK):
            block = rows[start : start + BLOCK]
            docs = loads(f"[{','.join([r[7] for r in block])}]")
            ids: Iterable[str] = (
                repeat(instance_id, len(block))
                if instance_id is not None
                else [r[8] for r in block]
            )
            for r, (source, target, payload, context_set, context_unset, meta), iid in zip(
                block, docs, ids, strict=True
            ):
                from_ = moved if source == before else tuple(source)
                to = moved = from_ if target == source else tuple(target)
                before = target
                wake_at, created_at = r[4], r[6]
                if created_at.tzinfo is not utc:
                    created_at = _utc(created_at)
                if wake_at is not None and wake_at.tzinfo is not utc:
                    wake_at = _utc(wake_at)
                # a copy of a dict holding every field, then each value replaced: about
                # half the time of a 14-key literal (a copy clones the hashed key table)
                fields = copy_template()
                fields["instance_id"] = iid
                fields["seq"] = r[0]
                fields["kind"] = r[1]
                fields["event"] = r[2]
                fields["source"] = from_
                fields["target"] = to
                fields["payload"] = payload
                fields["context_set"] = context_set
                fields["context_unset"] = tuple(context_unset)
                fields["status"] = r[3]
                fields["wake_at"] = wake_at
                fields["key"] = r[5]
                fields["meta"] = meta
                fields["created_at"] = created_at
                record = _new(record_type)
                _set(record, "__dict__", fields)
                _set(record, "__pydantic_fields_set__", fields_set)
                _set(record, "__pydantic_extra__", None)
                _set(record, "__pydantic_private__", None)
                append(record)
        return out


#: The name of :func:`select_replay`'s parameter: the kind of the rows read light.
LIGHT_KIND = "light_kind"


#: The format of the replay snapshots a log read for replay takes (the workflow
#: layer's, :mod:`durable.log.snapshot`): a snapshot of another format is ignored.
REPLAY_SNAPSHOT_FORMAT = 1


def select_replay(
    tables: Tables,
    light_kind: str,
    *,
    with_instance: bool = False,
    snapshots: bool = True,
    runs: Callable[[Any], ColumnElement[bool]] | None = None,
) -> Select[Any]:
    """``SELECT`` of log rows for replay: rows of ``light_kind`` bring only what a
    :class:`~statewf.records.StepRow` holds (their other columns come back NULL).
    The kind is the parameter :data:`LIGHT_KIND` (``light_kind`` its value here).

    With ``snapshots``, a run with a replay snapshot (of
    :data:`REPLAY_SNAPSHOT_FORMAT`) brings only its rows from the snapshot's seq on,
    the snapshot's document on the first of them (the row at that seq).

    Columns: seq, kind, key, created_at, the documents (payload and meta, then source,
    target, context_set and context_unset on full rows), event, status, wake_at, the
    snapshot's document (or NULL), then the instance id if ``with_instance``.

    ``runs`` makes the condition on an instance id column that picks the runs read
    (``lambda id: id == run_id``), applied to the log and to the snapshots alike: the
    server then finds the runs' snapshots by their key, never walking the table (a
    merge join on the key alone read the snapshots' index from its start).
    """
    c = tables.transitions.c
    # one named parameter: a statement compiled to text once (the claim's) takes the
    # kind with its other parameters
    full = c.kind != bindparam(LIGHT_KIND, light_kind, type_=c.kind.type)
    s = tables.replay_snapshots.c
    columns: list[Any] = [
        c.seq,
        c.kind,
        c.key,
        type_coerce(c.created_at, DateTime()).label("created_at"),
        case(
            (full, documents(tables, _REPLAY_JSON)), else_=documents(tables, _REPLAY_JSON[:2])
        ).label("documents"),
        case((full, c.event), else_=None).label("event"),
        case((full, c.status), else_=None).label("status"),
        type_coerce(case((full, c.wake_at), else_=None), DateTime()).label("wake_at"),
        (case((c.seq == s.seq, s.document), else_=None) if snapshots else null()).label("snapshot"),
    ]
    if with_instance:
        columns.append(c.instance_id)
    query = select(*columns)
    if runs is not None:
        query = query.where(runs(c.instance_id))
    if not snapshots:
        return query
    # the format inline (no parameter: the claim's statements are compiled once)
    taken = and_(
        s.instance_id == c.instance_id,
        s.format == literal_column(str(int(REPLAY_SNAPSHOT_FORMAT))),
        *([runs(s.instance_id)] if runs is not None else []),
    )
    joined = tables.transitions.outerjoin(tables.replay_snapshots, taken)
    return query.select_from(joined).where(or_(s.seq.is_(None), c.seq >= s.seq))


#: The JSON columns of :func:`select_replay`'s documents (light rows: the first two).
_REPLAY_JSON = ("payload", "meta", "source", "target", "context_set", "context_unset")


def read_replay(
    conn: Connection, query: Select[Any], light_kind: str, instance_id: str | None = None
) -> dict[str, list[ReplayRow]]:
    """Run a :func:`select_replay` query: each instance's rows in order (see
    :func:`replay_records`), the collector paused.

    ``instance_id`` is the one instance the rows belong to; without it the query must
    have been built ``with_instance`` (rows ordered by instance).
    """
    with gc_paused():
        return replay_records(conn.execute(query).all(), light_kind, instance_id)


def replay_records(
    rows: Sequence[Sequence[Any]], light_kind: str, instance_id: str | None = None
) -> dict[str, list[ReplayRow]]:
    """Rows of :func:`select_replay` (a driver's plain tuples will do) by instance, in
    order: a :class:`StepRow` for each row of ``light_kind`` and a full record for
    every other row, with one JSON decode; a run's first row that carries a replay
    snapshot becomes a :class:`~statewf.records.ReplaySnapshot` (it covers that row).

    ``instance_id`` is the one instance the rows belong to; without it the rows carry
    their instance id last and come ordered by instance.
    """
    if not rows:
        return {}
    with gc_paused():
        docs = loads(f"[{','.join([r[4] for r in rows])}]")
        ids: Iterable[str] = (
            repeat(instance_id, len(rows)) if instance_id is not None else [r[9] for r in rows]
        )
        logs: dict[str, list[ReplayRow]] = {}
        current: str | None = None
        into: list[ReplayRow] = []
        append = into.append  # replaced at the first row
        light, new_light = StepRow, tuple.__new__  # a NamedTuple's __new__ without its call
        for r, doc, iid in zip(rows, docs, ids, strict=True):
            if iid != current:
                current, append = iid, logs.setdefault(iid, []).append
                if r[8] is not None:
                    # the run's replay snapshot, in place of its rows up to this one
                    append(ReplaySnapshot(r[0], r[8]))
                    continue
            created_at = r[3]
            if created_at.tzinfo is not UTC:
                created_at = _utc(created_at)
            kind = r[1]
            if kind == light_kind:
                append(new_light(light, (r[0], kind, r[2], doc[0], doc[1], created_at)))
                continue
            wake_at = r[7]
            if wake_at is not None and wake_at.tzinfo is not UTC:
                wake_at = _utc(wake_at)
            payload, meta, source, target, context_set, context_unset = doc
            append(
                _record(
                    {
                        "instance_id": iid,
                        "seq": r[0],
                        "kind": kind,
                        "event": r[5],
                        "source": tuple(source),
                        "target": tuple(target),
                        "payload": payload,
                        "context_set": context_set,
                        "context_unset": tuple(context_unset),
                        "status": r[6],
                        "wake_at": wake_at,
                        "key": r[2],
                        "meta": meta,
                        "created_at": created_at,
                    }
                )
            )
        return logs


def _record(fields: dict[str, Any]) -> TransitionRecord:
    """A record with these (already valid) field values, built without validation."""
    record = _new(TransitionRecord)
    _set(record, "__dict__", fields)
    _set(record, "__pydantic_fields_set__", _ALL_SET)
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record


def _utc(value: datetime) -> datetime:
    """An instant as a UTC datetime (SQLite gives naive UTC, PostgreSQL the session's zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: The log row's columns, in the order :class:`TransitionRecord` declares its fields.
RECORD_FIELDS = (
    "instance_id",
    "seq",
    "kind",
    "event",
    "source",
    "target",
    "payload",
    "context_set",
    "context_unset",
    "status",
    "wake_at",
    "key",
    "meta",
    "created_at",
)


def check_fields(names: Iterable[str]) -> None:
    """Fail loudly at import if the record's fields and the columns read here diverge."""
    if tuple(names) != _FIELDS:
        raise RuntimeError(f"TransitionRecord fields changed: {_FIELDS}; update logrows")


check_fields(RECORD_FIELDS)
