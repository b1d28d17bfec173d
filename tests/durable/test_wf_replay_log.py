"""The log read for replay (steps light, every other row whole) replays as the full log does,
on both stores."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import wf_flows
from wf_flows import Make, until

import durable
from durable.execution.runner import RunExecutor
from durable.log.records import KIND_STEP
from durable.log.replay import History
from statewf.records import StepRow, TransitionRecord
from statewf.store.runs import load_replay, load_run, replay_logs, run_logs


def flaky() -> dict[str, Any]:
    """Fails on its first attempt, then returns JSON that must decode exactly."""
    step = durable.current_step()
    if step is not None and step.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"x": 1.5, "big": 2**70, "text": 'é \u2028 "q"', "nested": [None, True, {}]}


def failing() -> None:
    raise ValueError("always")


@durable.workflow("mixed")
async def mixed(ctx: durable.Context[None]) -> list[Any]:
    """Steps, a retried step, a caught failure, a patch, a wait for an event, parallel steps."""
    first = await ctx.step.run("first", lambda: 1)
    second = await ctx.step.run("flaky", flaky, retries=1, retry_delay=0) if ctx.patched("p") else 0
    with contextlib.suppress(durable.StepFailed):
        await ctx.step.run("failing", failing, retries=0)
    got = await ctx.step.wait_for("go", event="go")
    a, b = await ctx.gather(ctx.step.run("a", lambda: "a"), ctx.step.run("b", lambda: "b"))
    return [first, second, got, a, b]


def _light_fields(record: TransitionRecord) -> tuple[Any, ...]:
    return (record.seq, record.kind, record.key, record.payload, record.meta, record.created_at)


def test_the_replay_log_is_the_full_log_with_steps_light(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[mixed]) as engine:
            run = await engine.start_workflow("mixed", run_id="mixed-1")
            other = await engine.start_workflow("mixed", run_id="mixed-2")
            for run_id in (run.id, other.id):
                await until(lambda rid=run_id: "wait" in wf_flows.kinds(engine, rid), "the wait")
                await engine.trigger_event(run_id, "go", {"n": 7})
                done = await engine.wait_for_run(run_id, timeout=30)
                assert done.status == "completed", done
            store = engine.engine.store
            with store.transaction(readonly=True) as tx:
                loaded = load_run(tx, run.id)
                light = load_replay(tx, run.id, KIND_STEP)
                both_full = run_logs(tx, [run.id, other.id])
                both_light = replay_logs(tx, [other.id, run.id], KIND_STEP)
                missing = load_replay(tx, "no-such-run", KIND_STEP)
            assert loaded is not None
            assert light is not None
            assert missing is None
            snapshot, records = loaded
            assert light[0] == snapshot
            rows = light[1]
            assert len(rows) == len(records)
            kinds = {r.kind for r in records}
            assert {"step", "step_failed", "retry", "patch", "wait", "event"} <= kinds
            for row, record in zip(rows, records, strict=True):
                if record.kind == KIND_STEP:
                    assert isinstance(row, StepRow)
                    assert tuple(row) == _light_fields(record)
                    assert row.created_at.tzinfo == record.created_at.tzinfo
                else:
                    assert row == record
                    assert isinstance(row, TransitionRecord)
            assert set(both_light) == set(both_full) == {run.id, other.id}
            for run_id, full in both_full.items():
                assert [r.seq for r in both_light[run_id]] == [r.seq for r in full]
            assert History.from_log(rows) == History.from_log(records)

            # the executor replays the light log to the same outcome and timeline
            wf = engine.executor.registry.definition(snapshot.machine, snapshot.machine_version)
            outcomes, timelines = [], []
            for log in (records, rows):
                executor = RunExecutor(engine.executor.host, wf, snapshot, log)
                executor.finish()  # replay only: nothing is written
                outcomes.append(await executor.run_function())
                timelines.append(executor.timeline())
            assert outcomes[0] == outcomes[1]
            assert outcomes[0].kind == "completed"
            assert timelines[0] == timelines[1]
            assert len(timelines[0]) == 6

    asyncio.run(main())
