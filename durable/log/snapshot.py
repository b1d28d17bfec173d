"""A run's replay snapshot: its :class:`~durable.log.replay.History` up to a seq, as one
JSON document. Pure.

Resuming a long run reads its whole log to rebuild the history replay needs; the
snapshot holds that history as folded up to a row (``seq``), so a resume reads the
snapshot and only the rows after it (:func:`statewf.store.runs.replay_logs`), and
folds those on top (:meth:`History.add`, the same fold as a full read's). It is
derived data, never the truth: it is trusted up to the seq it names only, and one
that does not decode, names another run, seq or workflow version, or has another
:data:`FORMAT` is ignored (the caller reads the whole log). The log is append-only,
so a history folded up to ``seq`` stays right for good: an operator's ``retry_run``
appended later voids positions in the fold of its own row, on top of the snapshot,
exactly as on top of the rows.

The document is columnar (one list per field of the recorded steps and calls): a
10,000-step history decodes with one ``json.loads`` and a few ``zip`` over lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any

from durable.log.records import RunError
from durable.log.replay import History, RecordedRetries, RecordedStep
from statewf.records import ReplayRow, ReplaySnapshot, TransitionRecord
from statewf.store.logrows import REPLAY_SNAPSHOT_FORMAT, gc_paused

#: The document's format: bumped whenever :class:`History` or this encoding changes, so
#: snapshots written by other code are ignored (on the server: the log read skips them).
FORMAT = REPLAY_SNAPSHOT_FORMAT

#: An execution that read or wrote at least this many rows past the run's snapshot (or
#: in all, without one; and an eighth of the rows the snapshot covers) leaves a new
#: snapshot once it stops without completing the run.
SNAPSHOT_ROWS = 500

_new_tuple = tuple.__new__


def encode(history: History, run_id: str, seq: int, workflow: str, version: str) -> str:
    """The snapshot document of ``history``, folded from ``run_id``'s log up to ``seq``."""
    steps = list(history.steps.values())
    failed = {str(i): s.error.model_dump(mode="json") for i, s in enumerate(steps) if s.error}
    retries = [
        [p, r.attempts, r.retry_at.isoformat() if r.retry_at else None]
        for p, r in history.retries.items()
    ]
    columns = _columns(steps)
    keys, at = (columns[1], columns[0]) if steps else ([], [])
    same_calls = list(history.calls) == at and [k for k, _ in history.calls.values()] == keys
    doc = {
        "format": FORMAT,
        "run": run_id,
        "seq": seq,
        "workflow": workflow,
        "version": version,
        "n": len(steps),
        "steps": [_packed(column) for column in columns],
        "errors": failed,
        # the key -> position index, and the calls, when the steps' own columns give them
        # (a run of steps without retries, waits or voids: nearly every long log)
        "positions": None
        if list(history.positions.items()) == list(zip(keys, at, strict=True))
        else history.positions,
        "calls": [
            None if same_calls else _packed(list(history.calls)),
            None if same_calls else _packed([key for key, _ in history.calls.values()]),
            _packed([call for _, call in history.calls.values()]),
        ],
        "ncalls": len(history.calls),
        "retries": retries,
        "waits": _records(history.waits),
        "events": [r.model_dump(mode="json") for r in history.events],
        "consumed": sorted(history.consumed),
        "released": _records(history.released),
        "patches": history.patches,
    }
    return json.dumps(doc, separators=(",", ":"))


def decode(document: str, run_id: str, seq: int, workflow: str, version: str) -> History | None:
    """The history a snapshot document holds, or None when it is not one to trust for
    ``run_id`` up to ``seq`` under ``workflow`` ``version`` (the caller reads the log)."""
    try:
        with gc_paused():  # thousands of objects at once (see statewf.store.logrows)
            return _trusted(json.loads(document), run_id, seq, workflow, version)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _trusted(doc: Any, run_id: str, seq: int, workflow: str, version: str) -> History | None:
    """The document's history if it names this run, seq, workflow version and format."""
    if (doc["format"], doc["run"], doc["seq"]) != (FORMAT, run_id, seq):
        return None
    if (doc["workflow"], doc["version"]) != (workflow, version):
        return None
    return _history(doc)


def history_of(
    records: Sequence[ReplayRow], run_id: str, workflow: str, version: str
) -> History | None:
    """The history of a log read for replay: from its replay snapshot (first, if any)
    and the rows after it, else from its rows; None when the rows are not a whole log
    (a snapshot that cannot be trusted, or rows that do not start at seq 1, or none):
    the caller must read the whole log without snapshots."""
    if not records:
        return None  # every run has its create row: rows were left out
    first = records[0]
    if not isinstance(first, ReplaySnapshot):
        if first.seq != 1:
            return None  # rows left out for a snapshot that is not there
        return History.from_log(records)  # type: ignore[arg-type]
    history = decode(first.document, run_id, first.seq, workflow, version)
    if history is None:
        return None
    history.fold(records[1:])  # type: ignore[arg-type]
    return history


def _history(doc: dict[str, Any]) -> History:
    history = History()
    n = doc["n"]
    columns = [_unpacked(column, n) for column in doc["steps"]]
    if n:
        positions, keys = list(columns[0]), list(columns[1])
        columns[0], columns[1] = positions, keys
        steps = list(map(_new_tuple, repeat(RecordedStep), zip(*columns, strict=True)))
        for index, error in doc["errors"].items():
            step = steps[int(index)]
            steps[int(index)] = step._replace(error=RunError.model_validate(error))
        history.steps = dict(zip(positions, steps, strict=True))
    else:
        positions, keys = [], []
    by_key = doc["positions"]
    if by_key is None:
        history.positions = dict(zip(keys, positions, strict=True))
    elif all(isinstance(p, int) for p in by_key.values()):
        history.positions = by_key
    else:
        raise TypeError("a position is not an integer")
    ncalls = doc["ncalls"]
    at, called, calls = (_unpacked(c, ncalls) if c is not None else None for c in doc["calls"])
    at, called = (positions, keys) if at is None or called is None else (at, called)
    history.calls = dict(zip(at, zip(called, calls, strict=True), strict=True))  # type: ignore[arg-type]
    history.retries = {
        p: RecordedRetries(attempts, datetime.fromisoformat(when) if when else None)
        for p, attempts, when in doc["retries"]
    }
    history.waits = _decoded(doc["waits"])
    history.events = [TransitionRecord.model_validate(r) for r in doc["events"]]
    history.consumed = set(doc["consumed"])
    history.released = _decoded(doc["released"])
    history.patches = {str(k): bool(v) for k, v in doc["patches"].items()}
    return history


def _packed(values: list[Any]) -> Any:
    """A column: ``{"from": p}`` for ``p, p + 1, ...``, ``{"all": v}`` for one value
    throughout (of one type: ``1`` and ``True`` differ), else the list itself."""
    if not values:
        return values
    first = values[0]
    if (
        type(first) is int
        and all(type(v) is int for v in values)
        and values == list(range(first, first + len(values)))
    ):
        return {"from": first}
    kind = type(first)
    if kind in (int, str, bool, float, type(None)) and all(
        type(v) is kind and v == first for v in values
    ):
        return {"all": first}
    return values


def _unpacked(column: Any, n: int) -> Iterable[Any]:
    """The values of a :func:`_packed` column of ``n`` values."""
    if isinstance(column, list):
        if len(column) != n:
            raise ValueError("a column of the wrong length")
        return column
    if "from" in column:
        first = column["from"]
        if type(first) is not int:
            raise TypeError("a position is not an integer")
        return range(first, first + n)
    return repeat(column["all"], n)


def _columns(steps: list[RecordedStep]) -> list[list[Any]]:
    """The steps' fields as columns, the errors (kept in ``errors``) left out."""
    if not steps:
        return []
    columns = [list(column) for column in zip(*steps, strict=True)]
    columns[5] = [None] * len(steps)
    return columns


def _records(by_position: dict[int, TransitionRecord]) -> list[list[Any]]:
    return [[p, r.model_dump(mode="json")] for p, r in by_position.items()]


def _decoded(pairs: list[list[Any]]) -> dict[int, TransitionRecord]:
    return {int(p): TransitionRecord.model_validate(r) for p, r in pairs}
