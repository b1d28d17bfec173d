"""Documents that are bare JSON numbers (or hold them) read back as written, same types.

On SQLite a column declared ``JSON`` has NUMERIC affinity: SQLite converted a bare
number's text on insert (``1.0`` to the integer 1, ``2**70`` to a REAL, a REAL then
read through ``CAST(... AS TEXT)`` with 15 digits). Schema 8 declares the document
columns ``TEXT``; these tests hold both stores to the same answers.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statewf

#: Bare numbers SQLite's NUMERIC affinity changed, and their neighbours.
NUMBERS: list[Any] = [
    1.0,
    1 / 3,
    2**70,
    -0.0,
    1e-7,
    5e-324,
    -(2**70) - 1,
    0.1,
    1.7976931348623157e308,
    12345678901234567,
    0,
    -1,
    2**63 - 1,
    -(2**63),
]

counter = statewf.Machine(
    "counter",
    initial="idle",
    states={"idle": statewf.State(on={"SET": "idle"})},
)


def same(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down (and a zero's sign)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def stored_classes(path: Path, table: str, columns: list[str]) -> set[str]:
    """The SQLite storage classes the document ``columns`` of ``table`` hold."""
    conn = sqlite3.connect(path)
    try:
        found: set[str] = set()
        for column in columns:
            rows = conn.execute(f'SELECT DISTINCT typeof("{column}") FROM "{table}"')
            found |= {kind for (kind,) in rows}
        return found
    finally:
        conn.close()


def test_bare_number_payloads_and_contexts_read_back_as_written(
    db: dict[str, Any], tmp_path: Path
) -> None:
    with statewf.Engine(**db) as engine:
        engine.register(counter)
        for value in NUMBERS:
            inst = engine.create(counter, context={"n": value, "list": [value]})
            moved = engine.send(inst.id, "SET", value)
            last = engine.history(inst.id)[-1]
            assert same(last.payload, value), (value, last.payload)
            assert same(engine.get(inst.id).context, {"n": value, "list": [value]})
            assert same(moved.context, {"n": value, "list": [value]})
    if db["url"].startswith("sqlite"):
        path = Path(db["url"].removeprefix("sqlite:///"))
        kinds = stored_classes(path, "statewf_transitions", ["payload", "context_set", "meta"])
        assert kinds <= {"text", "null"}


#: Object keys: any text but NUL (which PostgreSQL's text cannot hold).
keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner`` values."""
    return st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    containers,
    max_leaves=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_any_json_payload_reads_back_equal_with_the_same_types(
    db: dict[str, Any], values: list[Any]
) -> None:
    with statewf.Engine(**db, table_prefix="prop_") as engine:
        engine.register(counter)
        inst = engine.create(counter)
        for value in values:
            engine.send(inst.id, "SET", value)
        got = [r.payload for r in engine.history(inst.id)[1:]]
        assert len(got) == len(values)
        for value, read in zip(values, got, strict=True):
            assert same(read, value), (value, read)


def test_both_sqlite_write_paths_store_a_bare_numbers_json_text_as_written(
    tmp_path: Path,
) -> None:
    # the raw sqlite3 fast path (statewf's own engine) and SQLAlchemy's execution (an
    # application's engine) store the same text: the JSON serializer's, as TEXT
    app_engine = sa.create_engine(f"sqlite:///{tmp_path / 'locked.db'}")
    fast = statewf.Engine(f"sqlite:///{tmp_path / 'fast.db'}")
    locked = statewf.Engine(app_engine)
    assert fast.store.conditional_writes
    assert not locked.store.conditional_writes
    for engine in (fast, locked):
        engine.register(counter)
        inst = engine.create(counter, id="n")
        for value in NUMBERS:
            engine.send(inst.id, "SET", value)
        engine.close()
    app_engine.dispose()
    expected = [("null", None)] + [("text", json.dumps(value)) for value in NUMBERS]
    for name in ("fast.db", "locked.db"):
        conn = sqlite3.connect(tmp_path / name)
        try:
            stored = conn.execute(
                "SELECT typeof(payload), payload FROM statewf_transitions ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()
        assert stored == expected, name
