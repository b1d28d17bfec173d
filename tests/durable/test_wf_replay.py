"""Replay: crashes at every step boundary, non-determinism, parallel steps, signals."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
import wf_flows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wf_flows import EXPECTED_OUTPUT, ORDER, STEP_KEYS, Crash, Make, crash_at_write, pipeline5

import durable
from durable.execution.runner import RunExecutor
from statewf.fold import fold

#: Writes of an uninterrupted pipeline-5 run: one per step, plus the completed row.
WRITES = len(STEP_KEYS) + 1


def step_results(engine: durable.WorkflowEngine, run_id: str) -> dict[str, Any]:
    """Step key -> (position, recorded result) from the log."""
    return {
        r.key: (r.meta["position"], r.payload["result"])
        for r in engine.engine.history(run_id)
        if r.kind == "step"
    }


async def reference_results(make_engine: Make) -> dict[str, Any]:
    async with make_engine(workflows=[pipeline5]) as engine:
        run = await engine.start_workflow("pipeline-5", ORDER, run_id="reference")
        await engine.wait_for_run(run.id)
        return step_results(engine, run.id)


async def crash_then_recover(
    make_engine: Make, run_id: str, crashes: list[tuple[int, bool]]
) -> None:
    """Start a run, crash it at each given (write number, after commit) in turn, then finish.

    Each crash kills one engine (as a dead process would); the next engine recovers
    the run on start. A crash number past the run's remaining writes crashes nothing.
    """
    first = True
    for n, after in crashes:
        with crash_at_write(n, after_commit=after):
            # every crash counts towards the dead letters (tested on their own): keep
            # the limit above the crashes here, this property is about replay
            engine = make_engine(workflows=[pipeline5], crash_limit=len(crashes) + 1)
            try:
                await engine.start()
                if first:
                    await engine.start_workflow("pipeline-5", ORDER, run_id=run_id)
                    first = False
                await engine.wait_for_run(run_id, timeout=30)
            except Crash:
                pass
            finally:
                await engine.close()
        async with make_engine(workflows=[pipeline5], recover=False) as probe:
            status = (await probe.get_run(run_id)).status if not first else "running"
        assert status in ("running", "completed")  # in progress after a crash, never stuck
    limit = len(crashes) + 1
    async with make_engine(workflows=[pipeline5], crash_limit=limit) as engine:  # recovery
        if first:
            await engine.start_workflow("pipeline-5", ORDER, run_id=run_id)
        done = await engine.wait_for_run(run_id, timeout=30)
        assert done.status == "completed", done.error
        assert done.output == EXPECTED_OUTPUT
        assert fold(engine.engine.history(run_id)) == engine.engine.get(run_id)


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
def test_crash_at_every_step_boundary_resumes_with_the_same_results(
    make_engine: Make, after_commit: bool
) -> None:
    async def main() -> None:
        reference = await reference_results(make_engine)
        for n in range(1, WRITES + 1):
            wf_flows.CALLS.clear()
            run_id = f"crash-{n}-{after_commit}"
            await crash_then_recover(make_engine, run_id, [(n, after_commit)])
            async with make_engine(workflows=[pipeline5], recover=False) as engine:
                assert step_results(engine, run_id) == reference
                kinds = [r.kind for r in engine.engine.history(run_id)]
            finished_before_crash = after_commit and n == WRITES
            assert kinds.count("recover") == (0 if finished_before_crash else 1)
            assert kinds.count("step") == len(STEP_KEYS)
            # a step whose row was committed never runs again; the one whose commit the
            # crash prevented ran twice (at-least-once), every other step exactly once
            repeated = {k for k, c in wf_flows.CALLS.items() if c > 1}
            assert all(c in (1, 2) for c in wf_flows.CALLS.values())
            if after_commit or n == WRITES:
                assert repeated == set(), (n, dict(wf_flows.CALLS))
            else:
                assert len(repeated) <= 2, (n, dict(wf_flows.CALLS))  # 2: a parallel pair
                assert repeated, (n, dict(wf_flows.CALLS))
            assert set(wf_flows.CALLS) == set(STEP_KEYS)

    asyncio.run(main())


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    crashes=st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=4),
    tag=st.integers(0, 10**9),
)
def test_repeated_crashes_anywhere_converge_to_the_uninterrupted_run(
    make_engine: Make, crashes: list[tuple[int, bool]], tag: int
) -> None:
    # each crash is counted from the start of that engine's life, so small numbers
    # land anywhere in the remaining run, including right after a recover row
    async def main() -> None:
        wf_flows.CALLS.clear()
        run_id = f"h-{tag}-{uuid.uuid4().hex[:8]}"
        await crash_then_recover(make_engine, run_id, crashes)
        async with make_engine(workflows=[pipeline5], recover=False) as engine:
            results = step_results(engine, run_id)
        assert sorted(results) == sorted(STEP_KEYS)
        assert results["pack-b"] == (3, "B")
        assert results["charge"] == (1, {"order_id": "o-1", "total": 30})
        assert max(wf_flows.CALLS.values()) <= 1 + len(crashes)

    asyncio.run(main())


def test_signals_cannot_be_swallowed_by_except_exception(make_engine: Make) -> None:
    @durable.workflow("swallow", version="1")
    async def v1(ctx: durable.Context[None]) -> str:
        await ctx.step.run("a", lambda: 1)
        await ctx.step.run("b", lambda: 2)
        return "v1"

    @durable.workflow("swallow", version="1")
    async def v2(ctx: durable.Context[None]) -> str:
        await ctx.step.run("a", lambda: 1)
        with contextlib.suppress(Exception):
            await ctx.step.run("renamed", lambda: 2)  # diverges from the log
        with contextlib.suppress(BaseException):  # even this cannot hide the abort
            await ctx.step.run("c", lambda: 3)
        return "swallowed"

    async def main() -> None:
        with crash_at_write(2, after_commit=True):
            async with make_engine(workflows=[v1]) as engine:
                run = await engine.start_workflow(v1)
                with pytest.raises(Crash):
                    await engine.wait_for_run(run.id)
        async with make_engine(workflows=[v2]) as engine:
            done = await engine.wait_for_run(run.id, timeout=30)
            assert done.status == "failed"
            assert done.error is not None
            assert done.error.type == "NonDeterminismError"
            kinds = [r.kind for r in engine.engine.history(run.id)]
            assert kinds == ["create", "step", "step", "recover", "failed"]

    asyncio.run(main())


def test_non_determinism_names_run_position_recorded_and_requested(make_engine: Make) -> None:
    def make(second: str) -> durable.Workflow[None, str]:
        @durable.workflow("changing")
        async def changing(ctx: durable.Context[None]) -> str:
            await ctx.step.run("first", lambda: 1)
            await ctx.step.run(second, lambda: 2)
            await ctx.step.run("third", lambda: 3)
            return "ok"

        return changing

    async def main() -> None:
        with crash_at_write(3, after_commit=False):  # steps 1-2 recorded, then a crash
            async with make_engine(workflows=[make("second")]) as engine:
                run = await engine.start_workflow("changing", run_id="nd-1")
                with pytest.raises(Crash):
                    await engine.wait_for_run(run.id)
        async with make_engine(workflows=[make("other")]) as engine:
            done = await engine.wait_for_run("nd-1", timeout=30)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "NonDeterminismError"
        assert done.error.details["position"] == 1
        assert done.error.details["recorded"] == "second"
        assert done.error.details["requested"] == "other"
        assert "nd-1" in done.error.message
        assert "'second'" in done.error.message
        assert "'other'" in done.error.message

    asyncio.run(main())


def test_code_that_stops_before_a_recorded_step_is_non_deterministic(make_engine: Make) -> None:
    @durable.workflow("shrinking")
    async def long(ctx: durable.Context[None]) -> str:
        await ctx.step.run("a", lambda: 1)
        await ctx.step.run("b", lambda: 2)
        await ctx.step.run("c", lambda: 3)
        return "long"

    @durable.workflow("shrinking")
    async def short(ctx: durable.Context[None]) -> str:
        await ctx.step.run("a", lambda: 1)
        return "short"

    async def main() -> None:
        with crash_at_write(3, after_commit=False):
            async with make_engine(workflows=[long]) as engine:
                run = await engine.start_workflow(long)
                with pytest.raises(Crash):
                    await engine.wait_for_run(run.id)
        async with make_engine(workflows=[short], recover=False) as engine:
            done = await engine.resume(run.id)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "NonDeterminismError"
        assert done.error.details["recorded"] == "b"
        assert done.output is None

    asyncio.run(main())


def test_duplicate_step_keys_fail_the_run(make_engine: Make) -> None:
    @durable.workflow("dupes")
    async def dupes(ctx: durable.Context[None]) -> None:
        for _ in range(2):
            await ctx.step.run("same", lambda: 1)

    async def main() -> None:
        async with make_engine(workflows=[dupes]) as engine:
            done = await engine.wait_for_run((await engine.start_workflow(dupes)).id)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "DuplicateStepKey"
        assert "f'process-{item}'" in done.error.message

    asyncio.run(main())


def _parallel(delays: dict[str, float]) -> durable.Workflow[None, Any]:
    async def work(name: str) -> str:
        await asyncio.sleep(delays[name])
        wf_flows.CALLS[name] += 1
        return f"{name}-done"

    @durable.workflow("fan-out")
    async def fan_out(ctx: durable.Context[None]) -> Any:
        first = await ctx.step.run("before", lambda: "start")
        results = await ctx.gather(*[ctx.step.run(n, work, n) for n in ("a", "b", "c")])
        plain = await asyncio.gather(ctx.step.run("d", work, "d"), ctx.step.run("e", work, "e"))
        return [first, *results, *plain]

    return fan_out


def test_parallel_steps_replay_identically_whatever_the_completion_order(
    make_engine: Make,
) -> None:
    fast_first = {"a": 0.0, "b": 0.02, "c": 0.04, "d": 0.0, "e": 0.03}
    slow_first = {"a": 0.04, "b": 0.02, "c": 0.0, "d": 0.03, "e": 0.0}
    expected = ["start", "a-done", "b-done", "c-done", "d-done", "e-done"]

    async def main() -> None:
        layouts = []
        seq_orders = []
        for i, delays in enumerate((fast_first, slow_first)):
            async with make_engine(workflows=[_parallel(delays)]) as engine:
                run = await engine.start_workflow("fan-out", run_id=f"par-{i}")
                assert await engine.result(run.id) == expected
                steps = [r for r in engine.engine.history(run.id) if r.kind == "step"]
                layouts.append({r.key: (r.meta["position"], r.payload) for r in steps})
                seq_orders.append([r.key for r in steps])
        assert layouts[0] == layouts[1]  # same key at the same position with the same result
        assert seq_orders[0] != seq_orders[1]  # though the rows were written in another order
        # replaying each run with the other timing asks for nothing new and gives the same output
        for i, delays in enumerate((slow_first, fast_first)):
            wf_flows.CALLS.clear()
            async with make_engine(workflows=[_parallel(delays)], recover=False) as engine:
                snap = engine.engine.get(f"par-{i}")
                assert snap.status == "completed"
                executor = RunExecutor(
                    engine.executor.host,
                    engine.workflows()[0],
                    snap.model_copy(update={"status": "running"}),
                    engine.engine.history(f"par-{i}"),
                )
                executor.finish()  # replay only: writing the end again is refused
                outcome = await executor.execute()
                assert outcome.kind == "completed"
                assert outcome.output == expected
            assert sum(wf_flows.CALLS.values()) == 0

    asyncio.run(main())


def test_crash_between_parallel_steps_reruns_only_the_unrecorded_one(make_engine: Make) -> None:
    delays = {"a": 0.0, "b": 0.03, "c": 0.06, "d": 0.0, "e": 0.0}

    async def main() -> None:
        # writes: before(1), a(2), b(3), c(4): crash before c's row is committed
        with crash_at_write(4, after_commit=False):
            async with make_engine(workflows=[_parallel(delays)]) as engine:
                run = await engine.start_workflow("fan-out", run_id="par-crash")
                with pytest.raises(Crash):
                    await engine.wait_for_run(run.id)
        assert dict(wf_flows.CALLS) == {"a": 1, "b": 1, "c": 1}
        async with make_engine(workflows=[_parallel(delays)]) as engine:
            assert await engine.result("par-crash", timeout=30) == [
                "start",
                "a-done",
                "b-done",
                "c-done",
                "d-done",
                "e-done",
            ]
        assert dict(wf_flows.CALLS) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}

    asyncio.run(main())
