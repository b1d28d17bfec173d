"""The log read for replay (steps light, every other row whole) replays as the full log does,
on both stores."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import wf_flows
from wf_flows import Make, until

import durable
from durable.control import claim as claiming
from durable.execution.runner import RunExecutor
from durable.log.records import KIND_STEP
from durable.log.replay import History, RecordedStep
from statewf.records import StepRow, TransitionRecord
from statewf.store.leases import ClaimScope
from statewf.store.loop_claim import LoopClaimer
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


@durable.workflow("napper")
async def napper(ctx: durable.Context[None]) -> int:
    """A dozen steps (a run of them long enough for the history's bulk path), a caught
    failure, a patch, then a sleep: the rest runs after a claim of the due run."""
    total = 0
    for i in range(12):
        total += await ctx.step.run(f"s{i}", lambda i=i: i)
    with contextlib.suppress(durable.StepFailed):
        await ctx.step.run("failing", failing, retries=0)
    if ctx.patched("p"):
        total += 100
    await ctx.step.sleep("nap", 10)
    return total + await ctx.step.run("last", lambda: 1000)


def test_a_claim_reads_the_log_for_replay(make_engine: Make, clock: Any) -> None:
    """The claimed run's log is the replay log (steps light), on the pipelined claim
    (PostgreSQL) and the general one (SQLite), and the run resumes from it."""

    async def main() -> None:
        async with make_engine(workflows=[napper], poll_interval=0.02) as engine:
            run = await engine.start_workflow("napper")
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the sleep")
        clock.advance(20)
        store = engine.engine.store
        scope = ClaimScope(kind="workflow", versions=[("napper", napper.version)], owner="me")
        claimer = claiming.Claimer(owner="me", scope=scope, lease_for=timedelta(seconds=60))
        done = claiming.claim_runs(store, claimer, clock, limit=10)
        assert [c.snapshot.id for c in done.runs] == [run.id]
        claimed = done.runs[0]
        with store.transaction(readonly=True) as tx:
            light = load_replay(tx, run.id, KIND_STEP)
            full = load_run(tx, run.id)
        assert light is not None
        assert full is not None
        assert claimed.snapshot == light[0]
        assert claimed.records == light[1]
        assert claimed.records[-1].kind == "wake"
        steps = 0
        for row, record in zip(claimed.records, full[1], strict=True):
            if record.kind == KIND_STEP:
                steps += 1
                assert isinstance(row, StepRow)
                assert tuple(row) == _light_fields(record)
            else:
                assert isinstance(row, TransitionRecord)
                assert row == record
        assert steps >= 12
        assert History.from_log(claimed.records) == History.from_log(full[1])

        # the claimer resumes the run from what it claimed, as a worker does
        async with make_engine(workflows=[napper], poll_interval=0.02) as engine:
            outcome = await engine.executor.executor_of(claimed).execute()
            assert outcome.kind == "completed", outcome
            finished = await engine.wait_for_run(run.id, timeout=30)
        assert finished.status == "completed", finished
        assert finished.output == sum(range(12)) + 100 + 1000

    asyncio.run(main())


def test_a_claim_from_the_event_loop_reads_the_log_for_replay(
    make_engine: Make, clock: Any
) -> None:
    """The scheduler's claim sent from the event loop (PostgreSQL) reads the same replay
    log as the thread's claim: steps light, every other row full."""

    async def main() -> None:
        async with make_engine(workflows=[napper], poll_interval=0.02) as engine:
            run = await engine.start_workflow("napper")
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the sleep")
        clock.advance(20)
        store = engine.engine.store
        if store.fast_path is None:
            pytest.skip("the claim from the event loop is PostgreSQL's")
        scope = ClaimScope(kind="workflow", versions=[("napper", napper.version)], owner="me")
        claimer = claiming.Claimer(owner="me", scope=scope, lease_for=timedelta(seconds=60))
        on_loop = LoopClaimer(store)
        try:
            done = await claiming.claim_runs_on_loop(on_loop, claimer, clock, limit=10)
        finally:
            on_loop.close()
        assert done is not None
        assert [c.snapshot.id for c in done.runs] == [run.id]
        claimed = done.runs[0]
        with store.transaction(readonly=True) as tx:
            light = load_replay(tx, run.id, KIND_STEP)
        assert light is not None
        assert claimed.snapshot == light[0]
        assert claimed.records == light[1]
        assert sum(isinstance(row, StepRow) for row in claimed.records) >= 12
        assert claimed.records[-1].kind == "wake"

    asyncio.run(main())


def _row_by_row(rows: list[Any]) -> History:
    history = History()
    for row in rows:
        history.add(row)
    return history


def _step(seq: int, key: str | None, payload: Any, **meta: Any) -> StepRow:
    return StepRow(seq, KIND_STEP, key, payload, meta, datetime(2026, 1, 1, tzinfo=UTC))


def _other(seq: int, kind: str, key: str | None = None, **meta: Any) -> TransitionRecord:
    return TransitionRecord(
        instance_id="r",
        seq=seq,
        kind=kind,
        status="running",
        key=key,
        meta=meta,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_history_of_runs_of_steps_is_the_row_by_row_history() -> None:
    """``History.from_log`` takes runs of step rows at once: the same dictionaries, in
    the same order, as row by row, whatever the rows hold."""
    rows: list[Any] = [_other(1, "create")]
    rows += [_step(2 + i, f"s{i}", {"result": i}, position=i, attempt=1) for i in range(10)]
    # a retry, then the step's outcome in a run of steps; a wait, then its outcome
    rows.append(_other(12, "retry", "s10", position=10, attempt=1, retry_at=None))
    rows.append(_other(13, "wait", "w", position=11, wait="wait"))
    odd = [
        _step(14, "s10", {"result": {"x": [1]}}, position=10.0, attempt=2, model="M"),
        _step(15, "w", {"result": 5}, position=11, wait="wait", timed_out=True),
        _step(16, None, None, position=12),  # no key, no payload object
        _step(17, "s13", ["not", "a", "dict"], position="13", attempt="3"),
        _step(18, "s0", {"result": "again"}, position=0),  # a position taken again
    ]
    odd += [_step(19 + i, f"t{i}", {"result": None}, position=14 + i) for i in range(8)]
    rows += odd
    rows.append(_other(27, "retry_run", voided=[3, 4]))
    rows += [_step(28 + i, f"s{3 + i}", {"result": -i}, position=3 + i) for i in range(2)]
    rows += [_step(30 + i, f"x{i}", {"result": i}, position=60 + i) for i in range(7)]
    # runs of steps the bulk path hands back to the row-by-row one
    rows += [_step(40 + i, f"u{i}", {"result": i}, position=30 + i) for i in range(9)]
    rows[-4] = _step(36, "no-position", {"result": 0})
    rows += [_step(50 + i, f"v{i}", {"result": i}, position=40 + i) for i in range(9)]
    rows[-2] = _step(57, "v7", {"result": 7}, position=47, event_seq=13)
    rows += [_step(60 + i, f"m{i}", {}, position=50 + i) for i in range(8)]
    rows[-1] = StepRow(67, KIND_STEP, "m7", {}, ["not", "a", "dict"], rows[-1].created_at)
    with contextlib.suppress(TypeError):
        _row_by_row(rows)  # a meta that is not an object fails row by row: drop that row
    rows.pop()
    expected = _row_by_row(rows)
    got = History.from_log(rows)
    assert got == expected
    for name in ("steps", "calls", "positions", "retries", "waits", "released", "patches"):
        assert list(getattr(got, name).items()) == list(getattr(expected, name).items()), name
    assert got.consumed == expected.consumed == {13}
    assert got.steps[3].result == 0
    assert got.steps[4].result == -1
    assert got.steps[10] == RecordedStep(10, "s10", True, {"x": [1]}, "M", None, 2, False)
    assert got.steps[11].timed_out
    assert got.steps[13].attempts == 3
    assert got.steps[13].result is None
    assert got.calls[11] == ("w", "wait")
    assert not got.waits
    assert got.steps[12].key == ""
    assert got.positions[""] == 12
    assert History.from_log(iter(rows)) == expected  # any iterable
