"""Writing a step's row, on both stores: the log holds one outcome per step position
whoever writes it, the engine's own write failures are not step failures, and a
pause during a step keeps the step's result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import wf_flows
from wf_flows import Make, until

import durable
from durable.execution.runner import RunExecutor
from durable.log.replay import History
from statewf.errors import StoreError
from statewf.records import TransitionRecord
from statewf.store.runs import load_run


def step_rows(engine: durable.WorkflowEngine, run_id: str) -> list[TransitionRecord]:
    return [r for r in engine.engine.history(run_id) if r.kind in ("step", "step_failed")]


def positions(engine: durable.WorkflowEngine, run_id: str) -> list[int]:
    return [int(r.meta["position"]) for r in step_rows(engine, run_id)]


# ------------------------------------------------------------ two executors of one run


def test_two_executors_of_one_run_record_each_position_once(make_engine: Make) -> None:
    both_started = asyncio.Event()
    calls: list[str] = []

    async def racing() -> str:
        calls.append("a")
        me = len(calls)
        if me == 2:
            both_started.set()
        await both_started.wait()  # both executors run step "a" at the same time
        await asyncio.sleep(0.05 * me)
        return f"result-{me}"

    async def slow() -> str:
        wf_flows.CALLS["b"] += 1
        await asyncio.sleep(0.3)  # still running when the other executor's "a" ends
        return "b-done"

    @durable.workflow("double")
    async def double(ctx: durable.Context[None]) -> list[Any]:
        a = await ctx.step.run("a", racing)
        b = await ctx.step.run("b", slow)
        return [a, b]

    async def main() -> None:
        engine = make_engine(workflows=[double], recover=False, scheduler=False)
        await engine.start()
        engine.executor.spawn = lambda _executor: None  # type: ignore[method-assign,assignment]
        run = await engine.start_workflow(double)  # left running, as after a crash
        first = await load_executor(engine, run.id)
        second = await load_executor(engine, run.id)
        assert isinstance(first, RunExecutor)
        assert isinstance(second, RunExecutor)
        outcomes = await asyncio.gather(first.execute(), second.execute())
        assert sorted(o.kind for o in outcomes) == ["completed", "stopped"]
        done = await engine.get_run(run.id)
        assert done.status == "completed"
        assert positions(engine, run.id) == [0, 1]  # never two rows for one position
        replayed = History.from_log(engine.engine.history(run.id))
        assert done.output == [replayed.steps[0].result, replayed.steps[1].result]
        assert wf_flows.CALLS["b"] == 1  # the executor that lost stopped there
        await engine.close()

    asyncio.run(main())


# ------------------------------------------------------------ the engine's own write failing


@contextlib.contextmanager
def failing_step_writes(
    engine: durable.WorkflowEngine, times: int, *, after_commit: bool = False
) -> Iterator[dict[str, int]]:
    """Make the next ``times`` writes of a ``step`` row raise ``StoreError``.

    With ``after_commit`` the row is written first and the error comes after it (a
    connection lost on the commit's answer), as the store sees it on both databases.
    """
    store = engine.engine.store
    state = {"left": times, "raised": 0}
    write_if_version = store.write_if_version
    transaction = store.transaction

    def flaky_write(snapshot: Any, record: TransitionRecord, version: int, **kw: Any) -> bool:
        if record.kind == "step" and state["left"] > 0:
            state["left"] -= 1
            state["raised"] += 1
            if after_commit:
                write_if_version(snapshot, record, version, **kw)
            raise StoreError("simulated connection lost")
        return write_if_version(snapshot, record, version, **kw)

    @contextlib.contextmanager
    def flaky_transaction(*args: Any, **kwargs: Any) -> Iterator[Any]:
        wrote_step = []
        with transaction(*args, **kwargs) as tx:
            append = tx.append

            def flaky_append(records: list[TransitionRecord]) -> None:
                is_step = bool(records) and records[0].kind == "step"
                if is_step and state["left"] > 0 and not after_commit:
                    state["left"] -= 1
                    state["raised"] += 1
                    raise StoreError("simulated connection lost")
                append(records)
                wrote_step.append(is_step)

            tx.append = flaky_append  # type: ignore[method-assign,assignment]
            yield tx
        if after_commit and any(wrote_step) and state["left"] > 0:
            state["left"] -= 1
            state["raised"] += 1
            raise StoreError("simulated connection lost")

    store.write_if_version = flaky_write  # type: ignore[method-assign,assignment]
    store.transaction = flaky_transaction  # type: ignore[method-assign]
    try:
        yield state
    finally:
        store.write_if_version = write_if_version  # type: ignore[method-assign]
        store.transaction = transaction  # type: ignore[method-assign]


@durable.workflow("blip")
async def blip(ctx: durable.Context[None]) -> str:
    try:
        await ctx.step.run("a", wf_flows.counted("a", 1))
    except Exception:  # must never see the engine's own write failure
        return "swallowed"
    await ctx.step.run("b", wf_flows.counted("b", 2))
    return "done"


def test_transient_write_failure_is_retried_not_a_step_failure(
    make_engine: Make,
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[blip]) as engine:
            with failing_step_writes(engine, 2) as state:
                run = await engine.start_workflow(blip)
                await until(lambda: run.id not in engine.executor.tasks, "the run")
            assert state["raised"] == 2
            done = await engine.get_run(run.id)
            assert (done.status, done.output) == ("completed", "done")
            assert positions(engine, run.id) == [0, 1]
            assert [r.kind for r in engine.engine.history(run.id)][-1] == "completed"
            assert wf_flows.CALLS["a"] == 1

    asyncio.run(main())


def test_write_that_failed_after_committing_is_not_written_again(
    make_engine: Make,
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[blip]) as engine:
            with failing_step_writes(engine, 1, after_commit=True) as state:
                run = await engine.start_workflow(blip)
                await until(lambda: run.id not in engine.executor.tasks, "the run")
            assert state["raised"] == 1
            done = await engine.get_run(run.id)
            assert (done.status, done.output) == ("completed", "done")
            assert positions(engine, run.id) == [0, 1]
            assert wf_flows.CALLS["a"] == 1

    asyncio.run(main())


async def load_executor(engine: durable.WorkflowEngine, run_id: str) -> RunExecutor:
    """An executor of the run built straight from its log, holding no lease."""

    def load() -> Any:
        with engine.engine.store.transaction() as tx:
            return load_run(tx, run_id)

    snapshot, records = await engine.executor.host.db(load)
    wf = engine.executor.registry.definition(snapshot.machine, snapshot.machine_version)
    return RunExecutor(engine.executor.host, wf, snapshot, records)


def test_lasting_write_failure_leaves_the_run_in_progress_for_recovery(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable.execution.writer, "_STORE_BACKOFF", (0.01, 0.02, 0.03, 0.04))

    async def main() -> None:
        async with make_engine(workflows=[blip]) as engine:
            with failing_step_writes(engine, 1000):
                run = await engine.start_workflow(blip)
                await until(lambda: run.id not in engine.executor.tasks, "the run")
            stuck = await engine.get_run(run.id)
            assert stuck.status == "running"  # not failed, not swallowed by except Exception
            assert [r.kind for r in engine.engine.history(run.id)] == ["create"]
            assert run.id not in engine.executor.crashes
            resumed = await engine.resume(run.id)
            assert (resumed.status, resumed.output) == ("completed", "done")
            assert positions(engine, run.id) == [0, 1]

    asyncio.run(main())


# ------------------------------------------------------------ pause during a step


def test_pause_during_a_step_keeps_its_result_and_the_step_runs_once(make_engine: Make) -> None:
    gate = asyncio.Event()

    async def charge() -> str:
        wf_flows.CALLS["charge"] += 1
        await gate.wait()
        return "charged"

    @durable.workflow("pause-charge")
    async def pause_charge(ctx: durable.Context[None]) -> list[str]:
        first = await ctx.step.run("charge", charge)
        second = await ctx.step.run("ship", wf_flows.counted("ship", "shipped"))
        return [first, second]

    async def main() -> None:
        async with make_engine(workflows=[pause_charge]) as engine:
            run = await engine.start_workflow(pause_charge)
            await until(lambda: wf_flows.CALLS["charge"] == 1, "the step to start")
            await engine.pause_workflow(run.id)
            gate.set()
            await until(lambda: run.id not in engine.executor.tasks, "the executor to stop")
            paused = engine.engine.get(run.id)
            assert paused.status == "paused"  # the step's row did not unpause the run
            assert [(r.key, r.payload) for r in step_rows(engine, run.id)] == [
                ("charge", {"result": "charged"})
            ]
            assert wf_flows.CALLS["ship"] == 0  # no new step after the pause
            await engine.resume_workflow(run.id)
            assert await engine.result(run.id, timeout=10) == ["charged", "shipped"]
            assert positions(engine, run.id) == [0, 1]

    asyncio.run(main())
    assert wf_flows.CALLS["charge"] == 1
    assert wf_flows.CALLS["ship"] == 1


# ------------------------------------------------------------ the run as its final row left it


@durable.workflow("ends")
async def ends(ctx: durable.Context[dict[str, Any]]) -> dict[str, Any]:
    value = await ctx.step.run("a", wf_flows.counted("a", {"k": [1, 2.5, "é"], "1": None}))
    if ctx.input.get("fail"):
        raise ValueError("asked to fail")
    return {"a": value, "input": ctx.input}


def test_wait_for_run_is_the_final_rows_run_as_a_read_gives_it(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ends]) as engine:
            reads: list[str] = []
            get_run = engine.client.get_run

            async def counted_read(run_id: str, **kw: Any) -> Any:
                reads.append(run_id)
                return await get_run(run_id, **kw)

            monkeypatch.setattr(engine.client, "get_run", counted_read)
            for given in ({"n": 1}, {"fail": True}):
                run = await engine.start_workflow(ends, given, resource_id="tenant")
                waited = await engine.wait_for_run(run.id, resource_id="tenant", timeout=30)
                assert reads == []  # this engine wrote the final row: no read
                assert waited == await get_run(run.id, resource_id="tenant")
            assert waited.status == "failed"
            assert waited.error is not None
            # another resource's wait is refused as the read refuses it
            run = await engine.start_workflow(ends, {"n": 2}, resource_id="tenant")
            with pytest.raises(durable.RunNotFound):
                await engine.wait_for_run(run.id, resource_id="other", timeout=30)
            # a wait begun after the run ended here reads the run
            done = await engine.wait_for_run(run.id, timeout=30)
            assert done.output == {"a": {"k": [1, 2.5, "é"], "1": None}, "input": {"n": 2}}
            assert reads == [run.id, run.id]

    asyncio.run(main())


@durable.workflow("moves")
async def moves(ctx: durable.Context[None]) -> list[Any]:
    a = await ctx.step.run("a", lambda: {"k": "é"})
    got = await ctx.step.wait_for("go", event="go", timeout="1 day")
    b = await ctx.step.run("b", lambda: [1, 2])
    return [a, got, b]


def test_each_stored_snapshot_is_its_logs_fold(make_engine: Make) -> None:
    # SQLite's step writes leave out the columns a row keeps (status, wake_at, the
    # context): the row must still read as the fold of its log at every turn
    async def main() -> None:
        async with make_engine(workflows=[moves]) as engine:
            store = engine.engine
            run = await engine.start_workflow(moves)
            await until(lambda: store.get(run.id).status == "waiting", "the wait")
            waiting = store.get(run.id)
            assert waiting.wake_at is not None
            assert waiting == store.replay(run.id)
            await engine.trigger_event(run.id, "go", {"ok": True})
            assert await engine.result(run.id, timeout=10) == [{"k": "é"}, {"ok": True}, [1, 2]]
            done = store.get(run.id)
            assert done.status == "completed"
            assert done.wake_at is None
            assert done == store.replay(run.id)

    asyncio.run(main())
