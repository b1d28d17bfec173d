"""PostgreSQL's send write prepared on libpq (statewf/store/pg_write.py) stores exactly
what psycopg's execution of the same statement stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

import statewf
from statewf.store import prebuilt
from statewf.store.pg_write import PreparedWrite
from statewf.store.schema import build_tables
from statewf.testing import ManualClock
from tests.conftest import PG_URL, tracked
from tests.integration.test_sqlite_fast_path import TABLES, drive


def rows(schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of statewf's tables in ``schema``, JSON and instants as text."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            return {
                name: [
                    tuple(r)
                    for r in conn.execute(
                        sa.text(f'SELECT (t.*)::text FROM "{schema}".statewf_{name} t ORDER BY 1')
                    )
                ]
                for name in TABLES
            }
    finally:
        engine.dispose()


def test_the_prepared_write_stores_what_psycopg_stores(pg_schema: str) -> None:
    other = f"{pg_schema}_b"
    prepared_clock, psycopg_clock = ManualClock(), ManualClock()
    prepared = tracked(statewf.Engine(PG_URL, schema=pg_schema, clock=prepared_clock))
    plain = tracked(statewf.Engine(PG_URL, schema=other, clock=psycopg_clock))
    try:
        assert prepared.store._prepared_write is not None
        plain.store._prepared_write = None  # every write through cursor.execute
        drive(prepared, prepared_clock)
        drive(plain, psycopg_clock)
        # effect outcomes are written in batches after the send: closing writes the rest
        prepared.close()
        plain.close()
        written, expected = rows(pg_schema), rows(other)
        for name in TABLES:
            assert written[name] == expected[name], name
        assert len(written["transitions"]) == 19
    finally:
        plain.close()
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{other}" CASCADE'))
        engine.dispose()


def test_values_without_a_text_form_here_go_to_psycopg() -> None:
    tables = build_tables()
    write, _ = prebuilt.conditional_writes(tables, prebuilt.RECORD_FIELDS)
    statement = PreparedWrite(write, {"i_context", "t_payload"}, b"statewf_test")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    params: dict[str, Any] = dict.fromkeys((n for n, _ in statement.params), "x")
    params.update(i_version=2, expected_version=1, release=False, i_updated_at=now)
    params.update(i_context={"k": "\x00"}, t_payload="text")  # JSON: escaped, fine
    found = statement.args(params)
    assert found is not None
    assert found[[n for n, _ in statement.params].index("t_payload")] == b'"text"'
    assert statement.args({**params, "i_state": "a\x00b"}) is None  # libpq cuts at a NUL
    assert statement.args({**params, "i_updated_at": now.replace(tzinfo=None)}) is None


def test_the_sends_arguments_built_from_the_models_are_the_dicts_text(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    engine = tracked(statewf.Engine(PG_URL, schema=pg_schema, clock=clock))
    prepared = engine.store._prepared_write
    assert prepared is not None
    seen: list[tuple[Any, ...]] = []
    row_args = prepared.row_args

    def kept(*args: Any) -> Any:
        seen.append(args)
        return row_args(*args)

    monkeypatch.setattr(prepared, "row_args", kept)
    drive(engine, clock)
    assert len(seen) >= 10  # every flat send's write took the models' path
    for snapshot, record, expected, release in seen:
        params = prebuilt.conditional_params(snapshot, record, expected, release)
        assert row_args(snapshot, record, expected, release) == prepared.args(params)
    snapshot, record, expected, release = seen[0]
    moved = snapshot.model_copy(update={"version": snapshot.version + 1})
    assert row_args(moved, record, expected, release) is None  # not its row: the dict's path
    nul = record.model_copy(update={"event": "a\x00b"})
    assert row_args(snapshot, nul, expected, release) is None  # no text form here


def test_kept_json_texts_are_the_encoders(pg_schema: str) -> None:
    clock = ManualClock()
    engine = tracked(statewf.Engine(PG_URL, schema=pg_schema, clock=clock))
    prepared = engine.store._prepared_write
    assert prepared is not None
    row_args = prepared.row_args
    spec = statewf.Machine(
        "kept-json",
        initial="a",
        states={"a": statewf.State(on={"GO": "b"}), "b": statewf.State(final=True)},
    )
    engine.register(spec)
    inst = engine.create(spec, context={"k": 1})
    engine.send(inst.id, "GO")
    snapshot = engine.get(inst.id)
    record = engine.history(inst.id)[-1]
    payloads: list[Any] = [None, (), [], {}, ("a", ["b"]), ("x", 1), [("y",)], "text", 1, True]
    for payload in payloads:
        for unset in ((), ("k",), ("k", "j")):
            changed = record.model_copy(update={"payload": payload, "context_unset": unset})
            params = prebuilt.conditional_params(snapshot, changed, record.seq - 1, False)
            for _ in range(2):  # encoded, then from the kept texts
                assert row_args(snapshot, changed, record.seq - 1, False) == prepared.args(params)
