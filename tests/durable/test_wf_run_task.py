"""Where a run's workflow function runs: in the engine's task of the run when there is no
deadline to watch, else in a task of its own; a cancellation ends the run either way."""

from __future__ import annotations

import asyncio
import contextlib

import wf_flows
from wf_flows import Make

import durable


def test_a_cancellation_the_workflow_swallows_still_ends_the_run(make_engine: Make) -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    @durable.workflow("swallows")
    async def swallows(ctx: durable.Context[None]) -> str:
        await ctx.step.run("first", lambda: 1)
        with contextlib.suppress(asyncio.CancelledError):  # bad code: the run ends all the same
            await ctx.step.run("forever", forever)
        await ctx.step.run("after", wf_flows.counted("after", 1))
        return "went on"

    async def main() -> None:
        async with make_engine(workflows=[swallows]) as engine:
            run = await engine.start_workflow("swallows")
            await asyncio.wait_for(started.wait(), 10)
            await engine.cancel_workflow(run.id, reason="operator")
            final = await asyncio.wait_for(engine.wait_for_run(run.id), 10)
            assert final.status == "cancelled"
            assert final.output is None
            kinds = [r.kind for r in engine.engine.history(run.id)]
            assert kinds == ["create", "step", "cancel"]  # nothing written after the cancel
            assert run.id not in engine.executor.tasks

    asyncio.run(main())


def test_a_run_without_a_deadline_runs_in_its_own_task_and_one_with_a_deadline_completes(
    make_engine: Make,
) -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def where() -> str:
        tasks.append(asyncio.current_task())
        return "ok"

    @durable.workflow("plain")
    async def plain(ctx: durable.Context[None]) -> str:
        tasks.append(asyncio.current_task())
        return await ctx.step.run("where", where)

    @durable.workflow("bounded", timeout=3600)
    async def bounded(ctx: durable.Context[None]) -> str:
        return await ctx.step.run("where", where)

    async def main() -> None:
        async with make_engine(workflows=[plain, bounded]) as engine:
            run = await engine.start_workflow("plain")
            task = engine.executor.tasks[run.id]
            assert (await engine.wait_for_run(run.id)).output == "ok"
            assert tasks[0] is task  # the workflow function ran in the run's task
            other = await engine.start_workflow("bounded")
            assert (await engine.wait_for_run(other.id)).output == "ok"

    asyncio.run(main())
