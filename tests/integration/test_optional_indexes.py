"""The optional ``state`` index: built, used by ``list(state=...)``, dropped, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sample_machines as sm
import sqlalchemy as sa
from click.testing import CliRunner

import statewf
from statewf import Engine, InvalidInput
from statewf.cli import cli as cli_group
from tests.conftest import PG_URL


def _counters(eng: Engine) -> Engine:
    """12 counter instances, a third of them flipped to ``busy``."""
    eng.register(sm.counter_machine())
    for i in range(12):
        eng.create("counter", id=f"c-{i:02d}", context={"n": 0, "moves": 0})
        if i % 3 == 0:
            eng.send(f"c-{i:02d}", "FLIP")
    return eng


@pytest.fixture
def engine(db: dict[str, Any]) -> Iterator[Engine]:
    """A counter engine on each store (see :func:`_counters`)."""
    with _counters(statewf.Engine(**db)) as eng:
        yield eng


def _ids(engine: Engine, **filters: Any) -> list[str]:
    """Every id the filter lists, page by page (pages of 2, so the cursor is used)."""
    ids, cursor = [], None
    while True:
        page = engine.list(**filters, limit=2, cursor=cursor)
        ids += [i.id for i in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def _plan(engine: Engine, **filters: Any) -> str:
    """The database's plan of the statement ``engine.list(**filters)`` sends."""
    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if "ORDER BY" in statement:
            seen.append((statement, params))

    sa.event.listen(engine.store.engine, "before_cursor_execute", keep)
    try:
        engine.list(**filters, limit=5)
    finally:
        sa.event.remove(engine.store.engine, "before_cursor_execute", keep)
    statement, params = seen[-1]
    with engine.store.engine.connect() as conn:
        if engine.store.dialect == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # which index serves it, if any
            rows = conn.exec_driver_sql(f"EXPLAIN {statement}", params).all()
        else:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
    return "\n".join(str(r[-1]) for r in rows)


def test_state_lists_read_the_index_once_added_and_list_the_same(engine: Engine) -> None:
    before = {
        "state": _ids(engine, state="busy"),
        "machine+state": _ids(engine, machine="counter", state="idle"),
    }
    assert before["state"] == ["c-00", "c-03", "c-06", "c-09"]
    assert "instances_state" not in _plan(engine, state="busy")
    assert engine.store.optional_indexes() == {"state": False}

    prefix = engine.store.tables.prefix
    assert engine.add_index("state") == [
        f"{prefix}instances_state",
        f"{prefix}instances_machine_state",
    ]
    assert engine.store.optional_indexes() == {"state": True}
    assert engine.add_index("state") == []  # already built: nothing to do
    assert f"{prefix}instances_state" in _plan(engine, state="busy")
    assert f"{prefix}instances_machine_state" in _plan(engine, machine="counter", state="idle")
    assert _ids(engine, state="busy") == before["state"]
    assert _ids(engine, machine="counter", state="idle") == before["machine+state"]

    # sends keep the index current: the flipped instance moves between the lists
    engine.send("c-01", "FLIP")
    assert _ids(engine, state="busy") == ["c-00", "c-01", "c-03", "c-06", "c-09"]
    assert "c-01" not in _ids(engine, machine="counter", state="idle")

    assert engine.drop_index("state") == [
        f"{prefix}instances_state",
        f"{prefix}instances_machine_state",
    ]
    assert engine.drop_index("state") == []
    assert engine.store.optional_indexes() == {"state": False}
    assert _ids(engine, state="busy") == ["c-00", "c-01", "c-03", "c-06", "c-09"]


def test_an_unknown_index_name_is_refused_naming_the_known_ones(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match=r"no optional index named 'status'.*: state"):
        engine.add_index("status")
    with pytest.raises(InvalidInput, match="no optional index named"):
        engine.drop_index("")
    assert engine.store.optional_indexes() == {"state": False}


def test_an_index_left_invalid_by_a_failed_build_is_built_again(pg_schema: str) -> None:
    # only PostgreSQL's concurrent builds leave an invalid index behind
    with _counters(statewf.Engine(PG_URL, schema=pg_schema)) as engine:
        _rebuilds_invalid(engine)


def _rebuilds_invalid(engine: Engine) -> None:
    """An index marked invalid reads as not built, and ``add_index`` builds it again."""
    engine.add_index("state")
    name = f"{engine.store.tables.prefix}instances_state"
    schema = engine.store.tables.metadata.schema
    with engine.store.engine.begin() as conn:  # what an interrupted CONCURRENTLY build leaves
        conn.exec_driver_sql(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%(n)s)",
            {"n": f'"{schema}"."{name}"'},
        )
    assert engine.store.optional_indexes() == {"state": False}
    assert engine.add_index("state") == [name]
    assert engine.store.optional_indexes() == {"state": True}
    assert name in _plan(engine, state="busy")


def test_the_index_commands(engine: Engine, db: dict[str, Any]) -> None:
    base = ["--database", str(db["url"])]
    if db["schema"]:
        base += ["--schema", str(db["schema"])]
    runner = CliRunner()
    listed = runner.invoke(cli_group, [*base, "index", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == ["state", "not", "built"]
    added = runner.invoke(cli_group, [*base, "index", "add", "state"])
    assert added.exit_code == 0, added.output
    assert added.output.startswith("built ")
    assert "instances_machine_state" in added.output
    again = runner.invoke(cli_group, [*base, "index", "add", "state"])
    assert again.output.strip() == "index 'state' is already built"
    assert runner.invoke(cli_group, [*base, "index", "list"]).output.split() == ["state", "built"]
    wrong = runner.invoke(cli_group, [*base, "index", "add", "states"])
    assert wrong.exit_code == 1
    assert "no optional index named 'states'" in wrong.output
    dropped = runner.invoke(cli_group, [*base, "index", "drop", "state"])
    assert dropped.exit_code == 0
    assert dropped.output.startswith("dropped ")
    assert engine.store.optional_indexes() == {"state": False}
