"""Objects come back with their keys in the order they were written, on both stores.

PostgreSQL's JSONB reorders keys (shortest first); since schema version 3 the
application's documents (contexts, payloads, inputs, step results, outputs) are
json text there, as they are on SQLite.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from old_schema import migrate_to

import durable
import statewf
from statewf.store import postgres
from statewf.store.schema import build_tables

ORDER = {"zeta": 1, "alpha": {"yy": 1, "b": 2}, "mid": [3, {"k2": 0, "k1": 1}]}


def _note(ctx: dict[str, Any], ev: dict[str, Any]) -> None:
    ctx["notes"] = ev


door = statewf.Machine(
    "door",
    initial="shut",
    states={
        "shut": statewf.State(on={"OPEN": statewf.transition("open", action=_note)}),
        "open": statewf.State(on={"SHUT": "shut"}),
    },
)


def _keys(value: Any) -> Any:
    """The key order of every object in ``value``, recursively."""
    if isinstance(value, dict):
        return [(k, _keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return None


def test_contexts_and_payloads_keep_their_key_order(db: dict[str, str | None]) -> None:
    with statewf.Engine(**db) as engine:  # type: ignore[arg-type]
        engine.register(door)
        inst = engine.create("door", context=ORDER, id="d-1")
        engine.send(inst.id, "OPEN", {"who": "ops", "at": "noon"})
    with statewf.Engine(**db) as fresh:  # a new engine: nothing from a cache
        got = fresh.get("d-1")
        assert _keys(got.context) == _keys({**ORDER, "notes": {"who": "ops", "at": "noon"}})
        payload = fresh.history("d-1")[-1].payload
        assert list(payload or {}) == ["who", "at"]


@durable.workflow("ordered")
async def ordered(ctx: durable.Context[dict[str, Any]]) -> dict[str, Any]:
    booked = await ctx.step.run("book", lambda: {"car": 1, "hotel": 2, "flight": 3})
    return {**booked, "status": "done", "input": ctx.input}


def test_inputs_step_results_and_outputs_keep_their_key_order(db: dict[str, str | None]) -> None:
    async def main() -> dict[str, Any]:
        async with durable.WorkflowEngine(
            str(db["url"]), schema=db["schema"], workflows=[ordered]
        ) as engine:
            run = await engine.start_workflow("ordered", {"z": 1, "a": 2})
            await engine.wait_for_run(run.id, timeout=30)
        async with durable.Client(str(db["url"]), schema=db["schema"]) as client:
            done = await client.get_run(run.id)
            return dict(done.output)

    output = asyncio.run(main())
    assert list(output) == ["car", "hotel", "flight", "status", "input"]
    assert list(output["input"]) == ["z", "a"]


def test_an_upgraded_database_keeps_its_rows_and_writes_in_order(
    db: dict[str, str | None],
) -> None:
    """A database at schema version 2 (JSONB documents) migrates with its data intact."""
    url, schema = str(db["url"]), db["schema"]
    now = datetime.now(UTC)
    v2 = build_tables("up_", schema, version=2)
    raw = sa.create_engine(url)
    with raw.begin() as conn:
        if conn.dialect.name == "postgresql":
            postgres.lock_for_migration(conn, v2)
        migrate_to(conn, v2, 2)
        context = {"zeta": 1, "alpha": 2}
        conn.execute(
            v2.instances.insert().values(
                id="old-1",
                machine="door",
                machine_version="1",
                kind="machine",
                state="shut",
                configuration=["shut"],
                context=context,
                status="active",
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            v2.transitions.insert().values(
                instance_id="old-1",
                seq=1,
                kind="create",
                source=[],
                target=["shut"],
                context_set=context,
                context_unset=[],
                status="active",
                meta={"machine": "door", "machine_version": "1", "kind": "machine"},
                created_at=now,
            )
        )
    raw.dispose()
    with statewf.Engine(url, schema=schema, table_prefix="up_") as engine:
        engine.register(door)
        old = engine.get("old-1")
        assert old.context == {"zeta": 1, "alpha": 2}  # the same data (JSONB kept no order)
        moved = engine.send("old-1", "OPEN", {"who": "ops", "at": "noon"})
        assert list(moved.context["notes"]) == ["who", "at"]
        assert moved.version == 2
        new = engine.create("door", context=ORDER)
        assert _keys(engine.get(new.id).context) == _keys(ORDER)
