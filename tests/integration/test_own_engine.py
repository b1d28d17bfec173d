"""statewf on the application's own SQLAlchemy engine: one pool, the app's to close."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import durable
import statewf
from tests.conftest import tracked

flip = statewf.Machine(
    "flip",
    initial="a",
    states={"a": statewf.State(on={"F": "b"}), "b": statewf.State(on={"F": "a"})},
)


@pytest.fixture
def app_engine(db: dict[str, str | None]) -> Iterator[tuple[sa.Engine, str | None]]:
    """The application's engine, already used by the application before statewf sees it."""
    engine = sa.create_engine(str(db["url"]))
    schema = db["schema"]
    with engine.begin() as conn:
        if schema is not None:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        conn.execute(sa.text(f"CREATE TABLE {_orders(schema)} (id TEXT PRIMARY KEY)"))
        conn.execute(sa.text(f"INSERT INTO {_orders(schema)} VALUES ('o-1')"))
    yield engine, schema
    engine.dispose()


def _orders(schema: str | None) -> str:
    return f'"{schema}".app_orders' if schema else "app_orders"


def test_machines_run_on_the_apps_engine_and_leave_it_open(
    app_engine: tuple[sa.Engine, str | None],
) -> None:
    engine, schema = app_engine
    opened: list[Any] = []
    sa.event.listen(engine, "connect", lambda conn, rec: opened.append(conn))
    with statewf.Engine(engine, schema=schema) as sw:
        sw.register(flip)
        inst = sw.create("flip", id="f-1")
        for _ in range(3):
            inst = sw.send(inst.id, "F")
        assert inst.state == "b"
        assert [r.seq for r in sw.history(inst.id)] == [1, 2, 3, 4]
    # statewf opened no pool of its own beyond the app's, and closing it left the app's open
    assert len(opened) <= engine.pool.size() + 1
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {_orders(schema)} VALUES ('o-2')"))
        rows = conn.execute(sa.text(f"SELECT id FROM {_orders(schema)} ORDER BY id")).all()
    assert [r.id for r in rows] == ["o-1", "o-2"]


def test_the_apps_transactions_still_roll_back(app_engine: tuple[sa.Engine, str | None]) -> None:
    engine, schema = app_engine
    sw = tracked(statewf.Engine(engine, schema=schema))
    sw.register(flip)
    sw.create("flip")

    def failing_app_transaction() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {_orders(schema)} VALUES ('o-3')"))
            raise RuntimeError("the app's own failure")

    with pytest.raises(RuntimeError):
        failing_app_transaction()
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id FROM {_orders(schema)}")).all()
    assert [r.id for r in rows] == ["o-1"]


def test_a_workflow_engine_and_a_client_take_the_apps_engine(
    app_engine: tuple[sa.Engine, str | None],
) -> None:
    engine, schema = app_engine

    @durable.workflow("greet")
    async def greet(ctx: durable.Context[None]) -> str:
        return await ctx.step.run("hello", lambda: "hello")

    async def main() -> str:
        async with durable.WorkflowEngine(engine, schema=schema, workflows=[greet]) as wf:
            run = await wf.start_workflow("greet")
            done = await wf.wait_for_run(run.id, timeout=30)
        async with durable.Client(engine, schema=schema) as client:
            again = await client.get_run(run.id)
        assert again.status == "completed"
        return str(done.output)

    assert asyncio.run(main()) == "hello"
    with engine.connect() as conn:  # still open for the app
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_the_url_shown_hides_the_apps_password(pg_schema: str) -> None:
    from tests.conftest import PG_URL

    url = sa.make_url(PG_URL).set(password="s3cret-pw")
    engine = sa.create_engine(url)
    try:
        with statewf.Engine(engine, schema=pg_schema) as sw:
            assert "s3cret-pw" not in sw.url
            assert "***" in sw.url
    finally:
        engine.dispose()


def test_an_app_engine_in_another_time_zone_reads_the_same_utc_instants(
    pg_schema: str,
) -> None:
    from datetime import UTC

    from tests.conftest import PG_URL

    # statewf's own pools talk UTC; the application's engine keeps its sessions' zone
    tokyo = sa.create_engine(PG_URL, connect_args={"options": "-c TimeZone=Asia/Tokyo"})
    try:
        with tracked(statewf.Engine(PG_URL, schema=pg_schema)) as own:
            own.register(flip)
            inst = own.send(own.create("flip", id="f-tz").id, "F")
            mine = own.history(inst.id)
        with statewf.Engine(tokyo, schema=pg_schema) as theirs:
            theirs.register(flip)
            seen = theirs.history(inst.id)
        assert seen == mine
        assert all(r.created_at.tzinfo is UTC for r in seen)
        assert [r.created_at for r in seen] == [r.created_at for r in mine]
    finally:
        tokyo.dispose()
