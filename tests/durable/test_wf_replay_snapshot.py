"""Replay snapshots: a long run resumes from one derived row plus the rows after it, and
replays exactly as from its whole log, on both stores; an unusable or missing snapshot
costs a full read, never a different replay."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import wf_flows
from wf_flows import Crash, Make, until

import durable
from durable.control import claim as claiming
from durable.execution import snapshots
from durable.log.records import KIND_STEP
from durable.log.snapshot import FORMAT, history_of
from statewf.records import ReplaySnapshot
from statewf.store.leases import ClaimScope
from statewf.store.loop_claim import LoopClaimer
from statewf.store.runs import delete_replay_snapshot, load_replay, write_replay_snapshot

STEPS = 30


@pytest.fixture(autouse=True)
def short_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A resume that read 20 rows leaves a snapshot (500 in production)."""
    monkeypatch.setattr(snapshots, "SNAPSHOT_ROWS", 20)
    wf_flows.CALLS.clear()
    return


def make_long(rename: str | None = None) -> durable.Workflow[None, int]:
    """30 counted steps, a wait for "go", 3 more, a wait for "again", one more."""

    @durable.workflow("snap-long")
    async def long(ctx: durable.Context[None]) -> int:
        total = 0
        for i in range(STEPS):
            key = rename if rename is not None and i == 5 else f"s{i}"
            total += await ctx.step.run(key, wf_flows.counted(key, i))
        total += await ctx.step.wait_for("go", event="go")
        for i in range(3):
            total += await ctx.step.run(f"t{i}", wf_flows.counted(f"t{i}", 100))
        total += await ctx.step.wait_for("again", event="again")
        total += await ctx.step.run("last", wf_flows.counted("last", 1000))
        return total

    return long


EXPECTED = sum(range(STEPS)) + 1 + 300 + 2 + 1000


def replay_log(engine: durable.WorkflowEngine, run_id: str, **kw: Any) -> list[Any]:
    with engine.engine.store.transaction(readonly=True) as tx:
        loaded = load_replay(tx, run_id, KIND_STEP, **kw)
    assert loaded is not None
    return loaded[1]


def snapshot_seq(engine: durable.WorkflowEngine, run_id: str) -> int | None:
    """The seq of the run's stored replay snapshot, if it has one."""
    with engine.engine.store.transaction(readonly=True) as tx:
        s = tx.t.replay_snapshots.c
        return tx.conn.execute(sa.select(s.seq).where(s.instance_id == run_id)).scalar()


async def waiting_at_again(engine: durable.WorkflowEngine, run_id: str) -> None:
    """Start the long run, let it reach "go", send it, and wait for it at "again"."""
    await engine.start_workflow("snap-long", run_id=run_id)
    await until(lambda: "wait" in wf_flows.kinds(engine, run_id), "the first wait")
    await engine.trigger_event(run_id, "go", 1)
    await until(lambda: wf_flows.kinds(engine, run_id).count("wait") == 2, "the second wait")
    await until(lambda: isinstance(replay_log(engine, run_id)[0], ReplaySnapshot), "a snapshot")


def test_a_long_resume_leaves_a_snapshot_and_the_next_resume_reads_it(
    make_engine: Make, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[make_long()]) as engine:
            await waiting_at_again(engine, "snap-1")
            records = replay_log(engine, "snap-1")
            whole = replay_log(engine, "snap-1", snapshots=False)
            first = records[0]
            assert isinstance(first, ReplaySnapshot)
            # the snapshot covers the rows the resume read; the rows after it come whole
            assert [r.seq for r in records[1:]] == [r.seq for r in whole if r.seq > first.seq]
            snap = engine.engine.get(run_id := "snap-1")
            from_snapshot = history_of(records, run_id, snap.machine, snap.machine_version)
            assert from_snapshot is not None
            assert from_snapshot == history_of(whole, run_id, snap.machine, snap.machine_version)
            # an older snapshot never replaces it (an executor that lost its lease, say)
            with engine.engine.store.transaction() as tx:
                older = write_replay_snapshot(
                    tx, run_id, first.seq - 1, "{}", datetime.now(UTC), format=FORMAT
                )
            assert older is False
            assert snapshot_seq(engine, run_id) == first.seq
            await engine.trigger_event(run_id, "again", 2)
            done = await engine.wait_for_run(run_id, timeout=30)
            # a completed run's snapshot is of no more use: it goes
            await until(lambda: snapshot_seq(engine, run_id) is None, "the snapshot deleted")
        assert done.status == "completed"
        assert done.output == EXPECTED
        # every step ran once: the resumes replayed them from the snapshot or the log
        assert all(n == 1 for n in wf_flows.CALLS.values()), wf_flows.CALLS
        assert len(wf_flows.CALLS) == STEPS + 4
        assert "cannot be used" not in caplog.text  # the resumes read the snapshot

    asyncio.run(main())


def test_a_lost_or_unusable_snapshot_costs_a_full_read_not_a_different_replay(
    make_engine: Make, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[make_long()]) as engine:
            store = engine.engine.store
            for n, spoil in enumerate(("delete", "garbage", "other run", "other version")):
                run_id = f"spoilt-{n}"
                await waiting_at_again(engine, run_id)
                with store.transaction() as tx:
                    s = tx.t.replay_snapshots
                    where = s.c.instance_id == run_id
                    if spoil == "delete":
                        delete_replay_snapshot(tx, run_id)
                    elif spoil == "garbage":
                        tx.conn.execute(s.update().where(where).values(document="{not json"))
                    else:
                        doc = tx.conn.execute(s.select().where(where)).one().document
                        old, new = (
                            ('"run":"spoilt', '"run":"other')
                            if spoil == "other run"
                            else ('"version":"1"', '"version":"0"')
                        )
                        assert old in doc
                        changed = doc.replace(old, new)
                        tx.conn.execute(s.update().where(where).values(document=changed))
                await engine.trigger_event(run_id, "again", 2)
                done = await engine.wait_for_run(run_id, timeout=30)
                assert done.status == "completed", spoil
                assert done.output == EXPECTED, spoil
        assert all(n == 4 for n in wf_flows.CALLS.values()), wf_flows.CALLS
        # the three spoilt snapshots were read, and refused: each resume read the whole log
        assert caplog.text.count("its replay snapshot cannot be used") == 3

    asyncio.run(main())


def test_a_crash_before_the_snapshot_is_written_leaves_a_run_that_resumes(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the resume's rows are committed, before its snapshot."""

    def crash(*_args: Any) -> bool:
        raise Crash("killed before the snapshot's commit")

    async def main() -> None:
        with monkeypatch.context() as patched:
            patched.setattr(snapshots, "write_snapshot", crash)
            async with make_engine(workflows=[make_long()]) as engine:
                await engine.start_workflow("snap-long", run_id="crashing")
                await until(lambda: "wait" in wf_flows.kinds(engine, "crashing"), "the wait")
                await engine.trigger_event("crashing", "go", 1)
                with pytest.raises(Crash):
                    await engine.wait_for_run("crashing", timeout=30)
        async with make_engine(workflows=[make_long()]) as engine:
            assert not isinstance(replay_log(engine, "crashing")[0], ReplaySnapshot)
            await until(lambda: wf_flows.kinds(engine, "crashing").count("wait") == 2, "again")
            await engine.trigger_event("crashing", "again", 2)
            done = await engine.wait_for_run("crashing", timeout=30)
        assert done.status == "completed"
        assert done.output == EXPECTED
        assert all(n == 1 for n in wf_flows.CALLS.values()), wf_flows.CALLS

    asyncio.run(main())


def test_code_that_diverges_inside_the_snapshot_is_detected(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[make_long()]) as engine:
            await waiting_at_again(engine, "diverging")
        async with make_engine(workflows=[make_long(rename="renamed")]) as engine:
            assert isinstance(replay_log(engine, "diverging")[0], ReplaySnapshot)
            await engine.trigger_event("diverging", "again", 2)
            done = await engine.wait_for_run("diverging", timeout=30)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "NonDeterminismError"
        assert "position 5" in done.error.message
        assert "s5" in done.error.message

    asyncio.run(main())


FLAKY = {"fail": True}


def boom() -> str:
    wf_flows.CALLS["boom"] += 1
    if FLAKY["fail"]:
        raise RuntimeError("boom")
    return "fixed"


@durable.workflow("snap-failing")
async def failing(ctx: durable.Context[None]) -> str:
    """30 steps, then one that fails until fixed."""
    for i in range(STEPS):
        await ctx.step.run(f"s{i}", wf_flows.counted(f"s{i}", i))
    return str(await ctx.step.run("boom", boom, retries=0))


def test_retry_run_voids_a_failure_the_snapshot_holds(make_engine: Make) -> None:
    async def main() -> None:
        FLAKY["fail"] = True
        async with make_engine(workflows=[failing]) as engine:
            run = await engine.start_workflow("snap-failing", run_id="retried")
            failed = await engine.wait_for_run(run.id, timeout=30)
            assert failed.status == "failed"
            # the long execution left a snapshot over the failed step's row
            first = replay_log(engine, run.id)[0]
            assert isinstance(first, ReplaySnapshot)
            kinds = wf_flows.kinds(engine, run.id)
            assert kinds.index("step_failed") + 1 <= first.seq
            FLAKY["fail"] = False
            await engine.retry_run(run.id)
            done = await engine.wait_for_run(run.id, timeout=30)
        assert done.status == "completed"
        assert done.output == "fixed"
        assert wf_flows.CALLS["boom"] == 2
        assert all(wf_flows.CALLS[f"s{i}"] == 1 for i in range(STEPS))

    asyncio.run(main())


@durable.workflow("snap-napper")
async def napper(ctx: durable.Context[None]) -> int:
    """30 steps, then a sleep: the rest runs after a claim of the due run."""
    total = 0
    for i in range(STEPS):
        total += await ctx.step.run(f"s{i}", wf_flows.counted(f"s{i}", i))
    await ctx.step.sleep("nap", 10)
    return total + await ctx.step.run("last", wf_flows.counted("last", 1000))


def test_every_claim_path_reads_the_snapshot_and_the_rows_after_it(
    make_engine: Make, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The pipelined claim (PostgreSQL), the general one (SQLite) and the event loop's
    (PostgreSQL) read the snapshot first, and the run resumes from what they read."""

    async def main() -> None:
        async with make_engine(workflows=[napper], poll_interval=0.02) as engine:
            for run_id in ("nap-thread", "nap-loop"):
                await engine.start_workflow("snap-napper", run_id=run_id)
                await until(lambda r=run_id: engine.engine.get(r).status == "waiting", "sleep")
                # the execution's own rows made the log long: it left a snapshot
                await until(
                    lambda r=run_id: isinstance(replay_log(engine, r)[0], ReplaySnapshot),
                    "the snapshot",
                )
        clock.advance(20)
        store = engine.engine.store
        scope = ClaimScope(kind="workflow", versions=[("snap-napper", "1")], owner="me")
        claimer = claiming.Claimer(owner="me", scope=scope, lease_for=timedelta(seconds=60))
        claimed = claiming.claim_runs(store, claimer, clock, limit=1).runs
        if store.fast_path is not None:
            on_loop = LoopClaimer(store)
            try:
                done = await claiming.claim_runs_on_loop(on_loop, claimer, clock, limit=1)
            finally:
                on_loop.close()
            assert done is not None
            claimed += done.runs
        assert len(claimed) == (2 if store.fast_path is not None else 1)
        for run in claimed:
            run_id = run.snapshot.id
            with store.transaction(readonly=True) as tx:
                light = load_replay(tx, run_id, KIND_STEP)
                whole = load_replay(tx, run_id, KIND_STEP, snapshots=False)
            assert light is not None
            assert whole is not None
            assert isinstance(run.records[0], ReplaySnapshot)
            assert run.records == light[1]
            assert [r.kind for r in run.records[1:]] == ["wake"]  # the claim's own row
            snap = run.snapshot
            got = history_of(run.records, run_id, snap.machine, snap.machine_version)
            assert got == history_of(whole[1], run_id, snap.machine, snap.machine_version)
            async with make_engine(workflows=[napper], poll_interval=0.02) as engine:
                outcome = await engine.executor.executor_of(run).execute()
                assert outcome.kind == "completed", outcome
                finished = await engine.wait_for_run(run_id, timeout=30)
            assert finished.output == sum(range(STEPS)) + 1000
        assert "cannot be used" not in caplog.text
        # two runs, each step run once in each: the resumes replayed them all
        assert all(wf_flows.CALLS[f"s{i}"] == 2 for i in range(STEPS)), wf_flows.CALLS

    asyncio.run(main())


@durable.workflow("snap-timeline")
async def timed(ctx: durable.Context[None]) -> list[str]:
    """30 steps and a wait, then the timeline the code sees."""
    for i in range(STEPS):
        await ctx.step.run(f"s{i}", wf_flows.counted(f"s{i}", i))
    await ctx.step.wait_for("go", event="go")
    return [step.key for step in ctx.timeline]


def test_the_timeline_of_a_run_resumed_from_a_snapshot_is_the_whole_one(
    make_engine: Make,
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[timed]) as engine:
            await engine.start_workflow("snap-timeline", run_id="timed")
            await until(lambda: "wait" in wf_flows.kinds(engine, "timed"), "the wait")
            await until(lambda: isinstance(replay_log(engine, "timed")[0], ReplaySnapshot), "it")
            await engine.trigger_event("timed", "go", 1)
            done = await engine.wait_for_run("timed", timeout=30)
        assert done.output == [f"s{i}" for i in range(STEPS)] + ["go"]

    asyncio.run(main())


def test_a_snapshot_is_due_after_enough_rows_and_an_eighth_of_what_it_covers() -> None:
    """(SNAPSHOT_ROWS is 20 here.) A long run's snapshots are rewritten ever less often."""
    row = wf_flows.kinds  # any object: only the count and the first row matter
    assert not snapshots.snapshot_due([row] * 19, 0)  # type: ignore[list-item]
    assert snapshots.snapshot_due([row] * 10, 10)  # type: ignore[list-item]
    covering = [ReplaySnapshot(8000, "{}")]
    assert not snapshots.snapshot_due(covering + [row] * 999, 0)  # type: ignore[list-item]
    assert snapshots.snapshot_due(covering + [row] * 600, 400)  # type: ignore[list-item]
