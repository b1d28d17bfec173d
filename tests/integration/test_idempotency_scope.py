"""Idempotency keys of runs are kept per workflow: the same key on two workflows is two runs."""

from __future__ import annotations

import asyncio

import durable
import statewf


@durable.workflow("scope-signup")
async def signup(ctx: durable.Context[None]) -> str:
    return "signed up"


@durable.workflow("scope-invoice")
async def invoice(ctx: durable.Context[None]) -> str:
    return "invoiced"


def test_one_key_on_two_workflows_starts_two_runs(db: dict[str, str | None]) -> None:
    async def main() -> None:
        async with durable.WorkflowEngine(
            str(db["url"]), schema=db["schema"], workflows=[signup, invoice]
        ) as engine:
            first = await engine.start_workflow("scope-signup", idempotency_key="user-7")
            again = await engine.start_workflow("scope-signup", idempotency_key="user-7")
            other = await engine.start_workflow("scope-invoice", idempotency_key="user-7")
            assert again.id == first.id
            assert other.id != first.id
            assert (await engine.result(first.id)) == "signed up"
            assert (await engine.result(other.id)) == "invoiced"
            runs = await engine.get_runs()
            assert sorted(r.workflow for r in runs.items) == ["scope-invoice", "scope-signup"]

    asyncio.run(main())


def test_machine_keys_are_kept_per_machine_too(db: dict[str, str | None]) -> None:
    door = statewf.Machine("scope-door", initial="shut", states={"shut": statewf.State()})
    gate = statewf.Machine("scope-gate", initial="shut", states={"shut": statewf.State()})
    with statewf.Engine(str(db["url"]), schema=db["schema"]) as engine:
        engine.register(door, gate)
        a = engine.create("scope-door", idempotency_key="k")
        b = engine.create("scope-gate", idempotency_key="k")
        assert a.id != b.id
        assert engine.create("scope-door", idempotency_key="k").id == a.id
