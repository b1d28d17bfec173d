"""Reading log rows fast: JSON columns fetched as text and decoded by one ``json.loads``.

A long run's log is read whole on every resume and by ``history()``. Decoding six
JSON columns per row through the driver (one ``json.loads`` each) and building each
record through pydantic cost ~40 µs a row; here the JSON columns come back as text,
one JSON array of every row's documents is decoded at once (the same stdlib parser
the driver used, so the values are the same), and the records are built directly:
the rows were validated when they were written.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Select, Text, cast, select, type_coerce

from statewf.records import TransitionRecord
from statewf.store.schema import Tables

#: The instants of a log row: read as the driver gives them, made UTC here.
_TIMES = frozenset({"wake_at", "created_at"})
#: The plain columns of a log row, fetched as they are, in this order.
PLAIN = ("instance_id", "seq", "kind", "event", "status", "wake_at", "key", "created_at")
#: The JSON columns, fetched as text, in this order.
JSON_COLUMNS = ("source", "target", "payload", "context_set", "context_unset", "meta")
_FIELDS = tuple(TransitionRecord.model_fields)
_FIELD_SET = frozenset(_FIELDS)
_new = object.__new__
_set = object.__setattr__


def select_rows(tables: Tables) -> Select[Any]:
    """``SELECT`` of log rows with their JSON columns as text (add the WHERE and ORDER BY)."""
    c = tables.transitions.c
    plain = [
        type_coerce(c[name], DateTime()).label(name) if name in _TIMES else c[name]
        for name in PLAIN
    ]
    return select(*plain, *(cast(c[name], Text).label(name) for name in JSON_COLUMNS))


def records(rows: Sequence[Sequence[Any]]) -> list[TransitionRecord]:
    """Log records from rows of :func:`select_rows`, in order, with one JSON decode."""
    if not rows:
        return []
    text = ",".join(f"[{r[8]},{r[9]},{r[10] or 'null'},{r[11]},{r[12]},{r[13]}]" for r in rows)
    # Tens of thousands of new containers would run the cyclic collector many times
    # over a heap that only grows here; it runs again once the records exist.
    collecting = gc.isenabled()
    gc.disable()
    try:
        documents = json.loads(f"[{text}]")
        out: list[TransitionRecord] = []
        append = out.append
        record_type = TransitionRecord
        for r, (source, target, payload, context_set, context_unset, meta) in zip(
            rows, documents, strict=True
        ):
            wake_at, created_at = r[5], r[7]
            if created_at.tzinfo is not UTC:
                created_at = _utc(created_at)
            if wake_at is not None and wake_at.tzinfo is not UTC:
                wake_at = _utc(wake_at)
            record = _new(record_type)
            _set(
                record,
                "__dict__",
                {
                    "instance_id": r[0],
                    "seq": r[1],
                    "kind": r[2],
                    "event": r[3],
                    "source": tuple(source),
                    "target": tuple(target),
                    "payload": payload,
                    "context_set": context_set,
                    "context_unset": tuple(context_unset),
                    "status": r[4],
                    "wake_at": wake_at,
                    "key": r[6],
                    "meta": meta,
                    "created_at": created_at,
                },
            )
            _set(record, "__pydantic_fields_set__", set(_FIELD_SET))
            _set(record, "__pydantic_extra__", None)
            _set(record, "__pydantic_private__", None)
            append(record)
        return out
    finally:
        if collecting:
            gc.enable()


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
