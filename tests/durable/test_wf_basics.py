"""Starting, inspecting and cancelling runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import wf_flows
from db_snapshot import dump_tables
from pydantic import BaseModel, EmailStr
from wf_flows import EXPECTED_OUTPUT, ORDER, STEP_KEYS, Make, pipeline5

import durable
import statewf
from statewf.fold import fold


class Signup(BaseModel):
    email: EmailStr


@durable.workflow("signup", input=Signup)
async def signup(ctx: durable.Context[Signup]) -> dict[str, str]:
    user = await ctx.step.run("create-account", lambda: {"id": "u-1", "email": ctx.input.email})
    return {"user_id": user["id"]}


def test_run_completes_and_is_stored_as_an_instance_of_the_one_log(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[pipeline5]) as engine:
            run = await engine.start_workflow("pipeline-5", ORDER, resource_id="user-1")
            assert run.status == "running"
            done = await engine.wait_for_run(run.id)
            assert done.status == "completed"
            assert done.output == EXPECTED_OUTPUT
            assert done.input == ORDER
            assert done.completed_steps == len(STEP_KEYS)
            # the run is an ordinary statewf instance whose snapshot is the fold of its log
            records = engine.engine.history(run.id)
            assert fold(records) == engine.engine.get(run.id)
            snap = engine.engine.get(run.id)
            assert (snap.kind, snap.machine, snap.status) == ("workflow", "pipeline-5", "completed")
            steps = [r for r in records if r.kind == "step"]
            assert sorted(r.key for r in steps) == sorted(STEP_KEYS)
            assert sorted(r.meta["position"] for r in steps) == list(range(len(STEP_KEYS)))
            assert next(r.kind for r in records) == "create"
            assert records[-1].kind == "completed"

    asyncio.run(main())
    assert dict(wf_flows.CALLS) == dict.fromkeys(STEP_KEYS, 1)


def test_invalid_input_creates_nothing(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[signup]) as engine:
            before = dump_tables(engine.engine)
            with pytest.raises(statewf.InvalidInput, match="email"):
                await engine.start_workflow("signup", {"email": "not-an-email"})
            with pytest.raises(statewf.InvalidInput):
                await engine.start_workflow("signup", None)
            assert dump_tables(engine.engine) == before
            ok = await engine.start_workflow("signup", {"email": "a@example.com"})
            assert (await engine.result(ok.id)) == {"user_id": "u-1"}

    asyncio.run(main())


def test_unknown_workflow_and_unknown_run(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[signup]) as engine:
            with pytest.raises(durable.WorkflowNotRegistered, match="signup"):
                await engine.start_workflow("nope", {})
            with pytest.raises(durable.RunNotFound):
                await engine.get_run("missing")
            with pytest.raises(durable.RunNotFound):
                await engine.cancel_workflow("missing")

    asyncio.run(main())


def test_idempotent_start_same_engine_8_concurrent_callers(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[pipeline5]) as engine:
            runs = await asyncio.gather(
                *[
                    engine.start_workflow("pipeline-5", ORDER, idempotency_key="order:o-1")
                    for _ in range(8)
                ]
            )
            assert len({r.id for r in runs}) == 1
            await engine.wait_for_run(runs[0].id)
            page = await engine.get_runs(workflow="pipeline-5")
            assert [r.id for r in page.items] == [runs[0].id]

    asyncio.run(main())
    assert wf_flows.CALLS["validate"] == 1


def test_idempotent_start_8_engines_in_8_threads(make_engine: Make) -> None:
    engines = [make_engine(workflows=[pipeline5], recover=False) for _ in range(8)]
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def caller(engine: durable.WorkflowEngine) -> None:
        async def main() -> None:
            barrier.wait()
            run = await engine.start_workflow("pipeline-5", ORDER, idempotency_key="k-1")
            ids.append(run.id)
            await engine.wait_for_run(run.id)
            await engine.close()

        asyncio.run(main())

    threads = [threading.Thread(target=caller, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 8
    assert len(set(ids)) == 1
    page = engines[0].engine.list(kind="workflow")
    assert len(page.items) == 1
    assert wf_flows.CALLS["ship"] == 1


def test_idempotency_key_of_another_resource_is_rejected(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[signup]) as engine:
            first = await engine.start_workflow(
                "signup", {"email": "a@example.com"}, resource_id="r1", idempotency_key="k"
            )
            again = await engine.start_workflow(
                "signup", {"email": "b@example.com"}, resource_id="r1", idempotency_key="k"
            )
            assert again.id == first.id
            assert again.input == {"email": "a@example.com"}
            with pytest.raises(statewf.InvalidInput, match="another resource"):
                await engine.start_workflow(
                    "signup", {"email": "a@example.com"}, resource_id="r2", idempotency_key="k"
                )

    asyncio.run(main())


def test_resource_scoping_and_caller_chosen_ids(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[signup]) as engine:
            run = await engine.start_workflow(
                "signup", {"email": "a@example.com"}, run_id="run-alice", resource_id="alice"
            )
            assert run.id == "run-alice"
            await engine.wait_for_run(run.id, resource_id="alice")
            for call in (
                engine.get_run(run.id, resource_id="bob"),
                engine.check_progress(run.id, resource_id="bob"),
                engine.get_timeline(run.id, resource_id="bob"),
                engine.resume(run.id, resource_id="bob"),
                engine.cancel_workflow(run.id, resource_id="bob"),
            ):
                with pytest.raises(durable.RunNotFound, match="bob"):
                    await call
            assert (await engine.get_run(run.id, resource_id="alice")).status == "completed"
            with pytest.raises(statewf.DuplicateInstance, match="run-alice"):
                await engine.start_workflow(
                    "signup", {"email": "x@example.com"}, run_id="run-alice"
                )
            with pytest.raises(statewf.InvalidInput):
                await engine.start_workflow("signup", {"email": "x@example.com"}, run_id="")

    asyncio.run(main())


def test_get_runs_filters_and_cursor_pagination(make_engine: Make, clock: Any) -> None:
    async def main() -> None:
        async with make_engine(workflows=[signup, pipeline5]) as engine:
            ids = []
            for i in range(5):
                clock.advance(1)
                run = await engine.start_workflow(
                    "signup",
                    {"email": f"u{i}@example.com"},
                    resource_id="even" if i % 2 == 0 else "odd",
                )
                ids.append(run.id)
                await engine.wait_for_run(run.id)
            other = await engine.start_workflow("pipeline-5", ORDER)
            await engine.wait_for_run(other.id)
            seen: list[str] = []
            cursor = None
            while True:
                page = await engine.get_runs(workflow="signup", limit=2, cursor=cursor)
                seen += [r.id for r in page.items]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == ids
            even = await engine.get_runs(resource_id="even", status="completed")
            assert [r.id for r in even.items] == ids[0::2]
            assert (await engine.get_runs(status="failed")).items == []
            first = (await engine.get_run(ids[0])).created_at
            later = await engine.get_runs(
                workflow="signup", created_after=first, created_before=first
            )
            assert later.items == []
            window = await engine.get_runs(workflow="signup", created_after=first)
            assert len(window.items) == 5

    asyncio.run(main())


@durable.workflow("looping")
async def looping(ctx: durable.Context[list[str]]) -> int:
    items = await ctx.step.run("get-items", lambda: ctx.input)
    for item in items:
        await ctx.step.run(f"process-{item}", lambda i=item: i)
    return len(items)


def test_check_progress_uses_stored_static_analysis(make_engine: Make, db: Any) -> None:
    async def main() -> None:
        async with make_engine(workflows=[pipeline5, looping]) as engine:
            run = await engine.start_workflow("pipeline-5", ORDER)
            await engine.wait_for_run(run.id)
            loop_run = await engine.start_workflow("looping", ["x", "y", "z"])
            await engine.wait_for_run(loop_run.id)
        # a client without the workflows' code still gets the totals from the database
        async with make_engine(workflows=[]) as client:
            progress = await client.check_progress(run.id)
            # validate, charge, pack-{item} (a loop: counted once), 2 notifies, ship
            assert progress.total_steps == 8
            assert progress.completed_steps == 8
            assert progress.approximate is True  # the pack loop
            assert progress.completion_percentage == 100.0
            lp = await client.check_progress(loop_run.id)
            assert lp.completed_steps == 4
            assert lp.approximate is True
            assert lp.completion_percentage == 100.0

    asyncio.run(main())


def test_progress_of_an_unfinished_run(make_engine: Make) -> None:
    gate = asyncio.Event()

    async def wait_gate() -> str:
        await gate.wait()
        return "go"

    @durable.workflow("three")
    async def three(ctx: durable.Context[None]) -> str:
        await ctx.step.run("one", lambda: 1)
        await ctx.step.run("two", wait_gate)
        return await ctx.step.run("three", lambda: "x")

    async def main() -> None:
        async with make_engine(workflows=[three]) as engine:
            run = await engine.start_workflow(three)
            for _ in range(500):
                p = await engine.check_progress(run.id)
                if p.completed_steps == 1:
                    break
                await asyncio.sleep(0.01)
            assert (p.completed_steps, p.total_steps, p.approximate) == (1, 3, False)
            assert p.completion_percentage == pytest.approx(33.3)
            assert p.current_step == "one"
            assert p.status == "running"
            gate.set()
            assert (await engine.result(run.id)) == "x"

    asyncio.run(main())


def test_cancel_stops_a_running_step_and_is_logged(make_engine: Make) -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    @durable.workflow("stuck")
    async def stuck(ctx: durable.Context[None]) -> None:
        await ctx.step.run("first", lambda: 1)
        await ctx.step.run("forever", forever)
        await ctx.step.run("never", wf_flows.counted("never", 1))

    async def main() -> None:
        async with make_engine(workflows=[stuck]) as engine:
            run = await engine.start_workflow("stuck")
            await asyncio.wait_for(started.wait(), 10)
            cancelled = await engine.cancel_workflow(run.id, reason="operator")
            assert cancelled.status == "cancelled"
            final = await engine.wait_for_run(run.id)
            assert final.status == "cancelled"
            records = engine.engine.history(run.id)
            assert [r.kind for r in records] == ["create", "step", "cancel"]
            assert records[-1].meta == {"reason": "operator"}
            assert fold(records) == engine.engine.get(run.id)
            with pytest.raises(durable.RunFinished, match="cancelled"):
                await engine.cancel_workflow(run.id)
            again = await engine.resume(run.id)
            assert again.status == "cancelled"
            with pytest.raises(durable.WorkflowFailed, match="cancelled"):
                await engine.result(run.id)

    asyncio.run(main())
    assert wf_flows.CALLS["never"] == 0


def test_cancel_from_another_engine_stops_at_the_next_step_boundary(make_engine: Make) -> None:
    release = threading.Event()

    def blocking() -> str:
        release.wait(10)
        return "done"

    @durable.workflow("remote-cancel")
    async def remote(ctx: durable.Context[None]) -> None:
        await ctx.step.run("block", blocking)
        await ctx.step.run("after", wf_flows.counted("after", 1))

    async def main() -> None:
        async with make_engine(workflows=[remote]) as engine:
            run = await engine.start_workflow("remote-cancel")
            async with make_engine(recover=False) as other:
                await asyncio.sleep(0.05)
                await other.cancel_workflow(run.id)
            release.set()
            final = await engine.wait_for_run(run.id)
            assert final.status == "cancelled"
            kinds = [r.kind for r in engine.engine.history(run.id)]
            assert kinds == ["create", "cancel"]  # the block step's result was discarded

    asyncio.run(main())
    assert wf_flows.CALLS["after"] == 0


def test_timeline_and_statewf_history_work_on_runs(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[pipeline5]) as engine:
            run = await engine.start_workflow("pipeline-5", ORDER)
            await engine.wait_for_run(run.id)
            timeline = await engine.get_timeline(run.id)
            assert [t.key for t in timeline] == STEP_KEYS
            assert all(t.status == "completed" and len(t.attempts) == 1 for t in timeline)
            charge = timeline[1]
            assert charge.result == {"order_id": "o-1", "total": 30}
            assert charge.attempts[0].duration_ms is not None

    asyncio.run(main())


def test_unserializable_results_and_outputs_fail_clearly(make_engine: Make) -> None:
    @durable.workflow("bad-result")
    async def bad_result(ctx: durable.Context[None]) -> str:
        try:
            await ctx.step.run("obj", lambda: object(), retries=3)
        except durable.StepFailed as exc:
            # not retried: another attempt cannot fix it
            return f"caught {exc.error_type} after {exc.attempts}"
        return "not raised"

    @durable.workflow("bad-output")
    async def bad_output(ctx: durable.Context[None]) -> object:
        return object()

    async def main() -> None:
        async with make_engine(workflows=[bad_result, bad_output]) as engine:
            result = await engine.result((await engine.start_workflow("bad-result")).id)
            assert result == "caught ResultNotSerializable after 1"
            run = await engine.wait_for_run((await engine.start_workflow("bad-output")).id)
            assert run.status == "failed"
            assert run.error is not None
            assert run.error.type == "ResultNotSerializable"
            assert "pydantic model" in run.error.message

    asyncio.run(main())


def test_workflow_exception_fails_the_run_with_the_error_stored(make_engine: Make) -> None:
    @durable.workflow("boom")
    async def boom(ctx: durable.Context[None]) -> None:
        await ctx.step.run("fine", lambda: 1)
        raise ValueError("bad thing")

    async def main() -> None:
        async with make_engine(workflows=[boom]) as engine:
            run = await engine.wait_for_run((await engine.start_workflow("boom")).id)
            assert run.status == "failed"
            assert run.error is not None
            assert (run.error.type, run.error.message) == ("ValueError", "bad thing")
            assert "Traceback" in run.error.details["traceback"]
            with pytest.raises(durable.WorkflowFailed, match="ValueError: bad thing") as info:
                await engine.result(run.id)
            assert info.value.error_type == "ValueError"

    asyncio.run(main())


def test_a_closed_engine_refuses_new_work(make_engine: Make) -> None:
    async def main() -> None:
        engine = make_engine(workflows=[signup])
        await engine.close()
        with pytest.raises(durable.EngineClosed, match="closed"):
            await engine.start_workflow("signup", {"email": "a@example.com"})

    asyncio.run(main())


def test_a_stored_input_that_no_longer_validates_fails_the_run_clearly(make_engine: Make) -> None:
    class Old(BaseModel):
        x: int

    class New(BaseModel):
        y: str

    @durable.workflow("evolving", input=Old)
    async def old(ctx: durable.Context[Old]) -> int:
        await ctx.step.run("a", lambda: 1)
        return ctx.input.x

    @durable.workflow("evolving", input=New)
    async def new(ctx: durable.Context[New]) -> str:
        await ctx.step.run("a", lambda: 1)
        return ctx.input.y

    async def main() -> None:
        with wf_flows.crash_at_write(1, after_commit=False):
            async with make_engine(workflows=[old]) as engine:
                run = await engine.start_workflow(old, {"x": 1})
                with pytest.raises(wf_flows.Crash):
                    await engine.wait_for_run(run.id)
        async with make_engine(workflows=[new]) as engine:  # recovery must not choke on it
            done = await engine.wait_for_run(run.id, timeout=10)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "InvalidInput"
        assert "no longer validates" in done.error.message

    asyncio.run(main())
