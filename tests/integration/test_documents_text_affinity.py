"""Schema 8: a schema-7 SQLite file's document columns become TEXT, every row kept.

SQLite had converted bare numbers in those columns on insert (NUMERIC affinity): the
migration copies an INTEGER back as its text and a REAL as its shortest round-trip
text; what the conversion lost (``1.0`` became the integer 1) stays lost.
"""

from __future__ import annotations

import random
import sqlite3
import struct
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from db_snapshot import dump_tables
from hypothesis import given
from hypothesis import strategies as st
from old_schema import migrate_to

import statewf
from statewf.store import optional_indexes
from statewf.store.schema import build_tables
from statewf.store.sqlite_rebuild import real_as_json
from tests.integration.test_bare_number_documents import same


@statewf.effect
def announce(call: statewf.EffectCall) -> None:
    """An effect, so the outbox has rows to carry over (never dispatched here)."""


counter = statewf.Machine(
    "counter",
    initial="idle",
    states={"idle": statewf.State(on={"SET": statewf.transition("idle", action=announce)})},
)

#: What each bare payload written on schema 7 reads back as after the migration.
MIGRATED: list[tuple[Any, Any]] = [
    (1 / 3, 1 / 3),  # a REAL: its 17 digits back (the log read gave 15 before)
    (0.1, 0.1),
    (1e-7, 1e-7),
    (5e-324, 5e-324),
    (2**70, float(2**70)),  # converted to a REAL on insert: its int type is lost
    (-(2**70) - 1, float(-(2**70) - 1)),
    (1.0, 1),  # converted to an INTEGER on insert: its float type is lost
    (-0.0, 0),
    (12345, 12345),
    ("text", "text"),
    ({"a": 1.0}, {"a": 1.0}),  # inside an object: text all along
]


def _schema(path: Path) -> dict[str, tuple[str, str | None]]:
    """Every table, index and trigger of the file: name -> (type, SQL)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, type, sql FROM sqlite_master")
        return {str(name): (str(kind), sql) for name, kind, sql in rows}
    finally:
        conn.close()


def _declared(path: Path, table: str) -> dict[str, str]:
    """A table's columns and their declared types."""
    conn = sqlite3.connect(path)
    try:
        return {str(r[1]): str(r[2]) for r in conn.execute(f'PRAGMA table_info("{table}")')}
    finally:
        conn.close()


def _classes(path: Path, table: str, column: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {k for (k,) in conn.execute(f'SELECT DISTINCT typeof("{column}") FROM "{table}"')}
    finally:
        conn.close()


def _schema_7_file(path: Path, prefix: str) -> str:
    """A SQLite file migrated to schema 7 only, as statewf 7 left it."""
    url = f"sqlite:///{path}"
    v7 = build_tables(prefix, None, version=7)
    raw = sa.create_engine(url)
    with raw.begin() as conn:
        migrate_to(conn, v7, 7)
    raw.dispose()
    return url


def test_a_schema_7_sqlite_file_migrates_its_converted_numbers(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = _schema_7_file(path, "up_")
    with statewf.Engine(url, table_prefix="up_", migrate=False, dispatch_effects=False) as old:
        old.register(counter)
        optional_indexes.add(old.store, "state")
        ids = []
        for value, _ in MIGRATED:
            inst = old.create(counter, context={"n": value})
            old.send(inst.id, "SET", value)
            ids.append(inst.id)
        assert old.history(ids[0])[-1].payload == 0.333333333333333  # the bug, as it was
        before = dump_tables(old)
    assert len(before["up_effects"]) == len(MIGRATED)
    assert _classes(path, "up_transitions", "payload") == {"null", "integer", "real", "text"}
    schema_before = _schema(path)

    with statewf.Engine(url, table_prefix="up_", dispatch_effects=False) as engine:
        engine.register(counter)
        after = dump_tables(engine)
        versions = after.pop("up_schema_version")
        assert len(versions) == len(before.pop("up_schema_version")) + 1 == 8
        # every row kept: the instances, machines and effects rows unchanged, the log's
        # rows too but for the converted payloads (the dump reads them as numbers)
        for name in ("up_instances", "up_machines", "up_effects"):
            assert after[name] == before[name]
        assert len(after["up_transitions"]) == len(before["up_transitions"])
        for inst_id, (written, expected) in zip(ids, MIGRATED, strict=True):
            payload = engine.history(inst_id)[-1].payload
            assert same(payload, expected), (payload, expected)
            assert same(engine.get(inst_id).context, {"n": written})
        # written after the migration: kept as written
        engine.send(ids[0], "SET", 1.0)
        last = engine.history(ids[0])[-1].payload
        assert last == 1.0
        assert type(last) is float
    for table, column in [
        ("up_transitions", "payload"),
        ("up_transitions", "context_set"),
        ("up_transitions", "meta"),
        ("up_instances", "context"),
        ("up_machines", "definition"),
        ("up_effects", "args"),
    ]:
        assert _classes(path, table, column) <= {"text", "null"}, (table, column)
    schema_after = _schema(path)
    # every table, index (the declared ones, the optional state indexes) and automatic
    # index kept; the indexes under their own SQL
    assert set(schema_after) == set(schema_before)
    assert "up_instances_state" in schema_after
    assert "up_instances_machine_state" in schema_after
    for name, (kind, sql) in schema_before.items():
        if kind == "index":
            assert schema_after[name] == (kind, sql)
    transitions_sql = schema_after["up_transitions"][1]
    assert transitions_sql is not None
    assert transitions_sql.rstrip().endswith("WITHOUT ROWID")
    documents = {
        "up_instances": ["context"],
        "up_transitions": ["payload", "context_set", "meta"],
        "up_machines": ["definition"],
        "up_effects": ["args"],
    }
    for table, columns in documents.items():
        declared = _declared(path, table)
        assert {c: declared[c] for c in columns} == dict.fromkeys(columns, "TEXT")
    assert _declared(path, "up_instances")["configuration"] == "JSON"  # not a document


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_real_becomes_its_shortest_round_trip_text(value: float) -> None:
    text = real_as_json(value)
    assert text is not None
    assert float(text) == value
    assert text == repr(value)


def test_reals_copied_by_the_migration_round_trip_exactly() -> None:
    conn = sqlite3.connect(":memory:")
    conn.create_function("as_json", 1, real_as_json, deterministic=True)
    rng = random.Random(8)
    for _ in range(5000):
        value = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if value != value or value in (float("inf"), float("-inf")):
            continue
        (text,) = conn.execute("SELECT as_json(?)", (value,)).fetchone()
        assert float(text) == value
    conn.close()
