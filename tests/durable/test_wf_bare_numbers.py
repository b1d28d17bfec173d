"""A run's input, step results, event data and output that are bare JSON numbers read
back as written, with their types, across a sleep and a restart (replayed from the
log), on every store (SQLite once changed them: see test_bare_number_documents)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from wf_flows import Make, until

import durable
from statewf.testing import ManualClock
from tests.integration.test_bare_number_documents import NUMBERS, same


@durable.workflow("bare-numbers")
async def bare_numbers(ctx: durable.Context[Any]) -> Any:
    seen = await ctx.step.run("echo", lambda: ctx.input)
    await ctx.step.sleep("nap", "1 day")
    event = await ctx.step.wait_for("value", event="value", timeout="7 days")
    if not (same(seen, ctx.input) and same(event, ctx.input)):
        return {"replayed": [seen, event], "input": ctx.input}
    return event


def test_bare_numbers_round_trip_through_a_run_and_its_replay(
    make_engine: Make, clock: ManualClock
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[bare_numbers]) as engine:
            runs = [await engine.start_workflow(bare_numbers, value) for value in NUMBERS]
            for run in runs:
                await until(lambda r=run: engine.engine.get(r.id).status == "waiting", "the nap")
        clock.advance(timedelta(days=1))
        # a new engine: each run resumes by replaying its log (input, step result)
        async with make_engine(workflows=[bare_numbers]) as engine:
            for run in runs:
                await until(
                    lambda r=run: [x.kind for x in engine.engine.history(r.id)].count("wait") == 1,
                    "the wait for the value",
                )
            for run, value in zip(runs, NUMBERS, strict=True):
                await engine.trigger_event(run.id, "value", value)
            for run, value in zip(runs, NUMBERS, strict=True):
                output = await engine.result(run.id, timeout=10)
                assert same(output, value), (value, output)
                got = await engine.get_run(run.id)
                assert same(got.output, value)
                assert same(got.input, value)
                log = engine.engine.history(run.id)
                assert same(log[-1].payload, value)

    asyncio.run(main())
