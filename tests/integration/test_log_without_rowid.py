"""Schema 7: SQLite keeps the log clustered on its key (``WITHOUT ROWID``), rows intact."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from db_snapshot import dump_tables
from old_schema import migrate_to

import statewf
from statewf.store.schema import SCHEMA_VERSION, build_tables

door = statewf.Machine(
    "door",
    initial="shut",
    states={
        "shut": statewf.State(on={"OPEN": "open"}),
        "open": statewf.State(on={"SHUT": "shut"}),
    },
)


def _log_sql(path: Path, table: str) -> str:
    conn = sqlite3.connect(path)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        return str(sql)
    finally:
        conn.close()


def test_a_new_sqlite_database_keeps_its_log_without_rowid(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with statewf.Engine(f"sqlite:///{path}") as engine:
        engine.register(door)
        inst = engine.create(door)
        engine.send(inst.id, "OPEN")
        assert [r.seq for r in engine.history(inst.id)] == [1, 2]
    assert _log_sql(path, "statewf_transitions").rstrip().endswith("WITHOUT ROWID")
    assert _log_sql(path, "statewf_instances").rstrip().endswith(")")  # only the log


def test_a_schema_6_sqlite_database_migrates_with_its_log_intact(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    now = datetime.now(UTC)
    v6 = build_tables("up_", None, version=6)
    raw = sa.create_engine(url)
    with raw.begin() as conn:
        migrate_to(conn, v6, 6)
        # an index an operator made on the log: the rebuilds keep it
        conn.exec_driver_sql("CREATE INDEX ops_log_kind ON up_transitions (kind, created_at)")
    raw.dispose()
    assert "WITHOUT ROWID" not in _log_sql(path, "up_transitions")
    # rows written on the schema 6 tables (the code reads and writes both layouts alike)
    with statewf.Engine(url, table_prefix="up_", migrate=False) as old:
        old.register(door)
        ids = [old.create(door, context={"n": i, "text": "é"}).id for i in range(3)]
        for instance_id in ids:
            for event in ("OPEN", "SHUT", "OPEN"):
                old.send(instance_id, event, {"why": event})
        before = dump_tables(old)
    with statewf.Engine(url, table_prefix="up_") as engine:
        engine.register(door)
        after = dump_tables(engine)
        applied = after.pop("up_schema_version")
        assert len(applied) == SCHEMA_VERSION == len(before.pop("up_schema_version")) + 2
        assert after == before
        moved = engine.send(ids[0], "SHUT")
        assert moved.version == 5
        assert [r.seq for r in engine.history(ids[0])] == [1, 2, 3, 4, 5]
        assert engine.get(ids[1]).state == "open"
        duplicate = engine.store.tables.transitions.insert().values(
            instance_id=ids[1], seq=4, kind="event", source=["open"], target=["shut"],
            context_set={}, context_unset=[], status="active", meta={}, created_at=now,
        )  # fmt: skip
        # the key still refuses a second row at a seq
        with pytest.raises(statewf.ConcurrencyConflict), engine.store.transaction() as tx:
            tx.conn.execute(duplicate)
    assert _log_sql(path, "up_transitions").rstrip().endswith("WITHOUT ROWID")
    assert _log_sql(path, "ops_log_kind") == (
        "CREATE INDEX ops_log_kind ON up_transitions (kind, created_at)"
    )
