"""Waking and recovering runs: a rejected event is not delivered again on replay, a
cancel during recovery leaves the engine working, runs of versions an engine lacks
stay waiting, and a run whose log writes failed is taken up again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from wf_flows import Make, until

import durable
from durable.control import actions as control
from durable.execution import leases as holding
from statewf.testing import ManualClock


class Count(BaseModel):
    n: int


@durable.workflow("redeliver")
async def redeliver(ctx: durable.Context[Any]) -> list[str]:
    out = []
    try:
        await ctx.step.wait_for("w0", event="x", schema=Count)
        out.append("w0 ok")
    except durable.StepFailed:
        out.append("w0 failed")
    await ctx.step.sleep("nap", 10)  # the rest runs after a replay
    got = await ctx.step.wait_for("w1", event="x", schema=Count, timeout=5)
    out.append(f"w1 got {got}")
    return out


def test_an_event_a_wait_rejected_is_not_delivered_again_after_replay(
    make_engine: Make, clock: ManualClock
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[redeliver], poll_interval=0.02) as engine:
            run = await engine.start_workflow(redeliver)
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the wait")
            await engine.pause_workflow(run.id)
            # recorded while nothing checks it: the wait skips it, it never fails the run
            await engine.trigger_event(run.id, "x", {"n": "not-an-int"})
            await engine.resume_workflow(run.id)
            await until(lambda: engine.engine.get(run.id).status == "waiting", "w0 again")
            assert not any(r.kind == "sleep" for r in engine.engine.history(run.id))
            await engine.trigger_event(run.id, "x", {"n": 1})
            await until(
                lambda: any(r.kind == "sleep" for r in engine.engine.history(run.id)), "the sleep"
            )
            clock.advance(20)  # wake: the run replays, then reaches w1
            await until(
                lambda: any(
                    r.key == "w1" and r.kind == "wait" for r in engine.engine.history(run.id)
                ),
                "w1 waiting",
            )
            clock.advance(10)  # w1 times out: it must not take the rejected event again
            assert await engine.result(run.id, timeout=10) == ["w0 ok", "w1 got None"]
            takers = [r.key for r in engine.engine.history(run.id) if r.meta.get("event_seq")]
            assert takers == ["w0"]

    asyncio.run(scenario())


async def one_step() -> int:
    return 1


@durable.workflow("stopped-before-recovery")
async def short(ctx: durable.Context[Any]) -> int:
    return int(await ctx.step.run("a", one_step))


def test_a_run_cancelled_during_recovery_does_not_break_the_engine(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that lands right after a claim: the executor stops, the engine goes on."""
    claim = holding.claim

    def claim_then_cancel(store: Any, claimer: Any, clock: Any, **kw: Any) -> Any:
        claimed, dead = claim(store, claimer, clock, **kw)
        for item in claimed:
            control.cancel(store, item.snapshot.id, None, "operator", clock.now())
        return claimed, dead

    async def scenario(via: str) -> None:
        crashed = make_engine(workflows=[short], recover=False, scheduler=False)
        await crashed.start()
        crashed.executor.spawn = lambda executor: None  # type: ignore[method-assign]  # "crashes"
        run = await crashed.start_workflow(short)
        await crashed.close()  # hands the run back
        engine = make_engine(workflows=[short], recover=(via == "start"), scheduler=False)
        monkeypatch.setattr(holding, "claim", claim_then_cancel)
        try:
            if via == "start":
                await engine.start()  # must neither raise nor leave the engine half-started
                assert engine._started
                await until(lambda: not engine.executor.tasks, "the stopped execution")
            else:
                await engine.resume(run.id)
        finally:
            monkeypatch.setattr(holding, "claim", claim)
        done = await engine.get_run(run.id)
        assert done.status == "cancelled"
        assert [r.kind for r in engine.engine.history(run.id)][-1] == "cancel"
        await engine.close()

    asyncio.run(scenario("start"))
    asyncio.run(scenario("resume"))


@durable.workflow("versioned-wf", version="1")
async def old_version(ctx: durable.Context[Any]) -> str:
    await ctx.step.sleep("nap", 10)
    return "v1"


@durable.workflow("versioned-wf", version="2")
async def new_version(ctx: durable.Context[Any]) -> str:
    await ctx.step.sleep("nap", 10)
    return "v2"


def test_runs_of_a_version_this_engine_lacks_are_left_waiting(
    make_engine: Make, clock: ManualClock
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[old_version], poll_interval=0.02) as engine:
            run = await engine.start_workflow(old_version)
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the sleep")
        clock.advance(20)
        async with make_engine(workflows=[new_version], poll_interval=0.02) as engine:
            await asyncio.sleep(0.3)
            assert engine.engine.get(run.id).status == "waiting"  # not taken, not stuck
        async with make_engine(workflows=[old_version, new_version], poll_interval=0.02) as engine:
            assert await engine.result(run.id, timeout=10) == "v1"

    asyncio.run(scenario())


def test_a_live_engine_takes_a_run_up_again_after_its_log_writes_failed(
    make_engine: Make, monkeypatch: Any
) -> None:
    from test_wf_step_writes import blip, failing_step_writes

    import durable.execution.writer

    monkeypatch.setattr(durable.execution.writer, "_STORE_BACKOFF", (0.01, 0.02))

    async def scenario() -> None:
        async with make_engine(workflows=[blip], poll_interval=0.02) as engine:
            with failing_step_writes(engine, 1000):
                run = await engine.start_workflow(blip)
                await until(lambda: run.id not in engine.executor.tasks, "the failed execution")
                assert engine.engine.get(run.id).status == "running"
            # the database is back: no restart, no resume() call
            assert await engine.result(run.id, timeout=10) == "done"

    asyncio.run(scenario())
