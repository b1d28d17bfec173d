"""Durable waits on both stores with a manual clock: sleeps, events, pauses, polls, approvals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import wf_flows
from pydantic import BaseModel
from wf_flows import Make, kinds, until

import durable
import statewf
from statewf.fold import fold
from statewf.testing import ManualClock


def status(engine: durable.WorkflowEngine, run_id: str) -> str:
    return engine.engine.get(run_id).status


class Renewal(BaseModel):
    plan: str


@durable.workflow("sleeper")
async def sleeper(ctx: durable.Context[None]) -> str:
    await ctx.step.run("before", wf_flows.counted("before", 1))
    await ctx.step.sleep("trial", "30 days")
    await ctx.step.run("after", wf_flows.counted("after", 2))
    return "woke"


def test_sleep_fires_at_its_time_not_before_and_holds_no_task(
    make_engine: Make, clock: ManualClock
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[sleeper]) as engine:
            t0 = clock.now()
            run = await engine.start_workflow(sleeper)
            await until(lambda: status(engine, run.id) == "waiting", "the sleep")
            assert engine.engine.get(run.id).wake_at == t0 + timedelta(days=30)
            await until(lambda: run.id not in engine.executor.tasks, "the executor to end")
            clock.advance(timedelta(days=30) - timedelta(seconds=1))
            await asyncio.sleep(0.05)
            assert status(engine, run.id) == "waiting"
            assert wf_flows.CALLS["after"] == 0
            clock.advance(1)
            assert await engine.result(run.id, timeout=10) == "woke"
            assert kinds(engine, run.id) == [
                "create",
                "step",
                "sleep",
                "wake",
                "step",
                "step",
                "completed",
            ]
            assert fold(engine.engine.history(run.id)) == engine.engine.get(run.id)

    asyncio.run(main())
    assert dict(wf_flows.CALLS) == {"before": 1, "after": 1}


def test_a_sleep_survives_a_full_restart(make_engine: Make, clock: ManualClock) -> None:
    async def main() -> None:
        async with make_engine(workflows=[sleeper]) as engine:
            run = await engine.start_workflow(sleeper)
            await until(lambda: status(engine, run.id) == "waiting", "the sleep")
        clock.advance(timedelta(days=31))  # every process was down when it came due
        async with make_engine(workflows=[sleeper]) as engine:
            assert await engine.result(run.id, timeout=10) == "woke"

    asyncio.run(main())
    assert dict(wf_flows.CALLS) == {"before": 1, "after": 1}


def test_wait_until_past_continues_at_once_and_naive_times_fail(make_engine: Make) -> None:
    @durable.workflow("until")
    async def until_wf(ctx: durable.Context[str]) -> str:
        await ctx.step.wait_until("launch", ctx.input)
        return "launched"

    async def main() -> None:
        async with make_engine(workflows=[until_wf]) as engine:
            past = await engine.start_workflow(until_wf, "2020-01-01T09:00:00Z")
            assert await engine.result(past.id, timeout=10) == "launched"
            assert "sleep" not in kinds(engine, past.id)  # never suspended
            naive = await engine.wait_for_run(
                (await engine.start_workflow(until_wf, "2031-01-01T09:00:00")).id
            )
            assert naive.status == "failed"
            assert naive.error is not None
            assert naive.error.type == "InvalidInput"
            assert "time zone" in naive.error.message

    asyncio.run(main())


@durable.workflow("renewals")
async def renewals(ctx: durable.Context[None]) -> list[Any]:
    first = await ctx.step.wait_for("first", event="renewed", timeout="7 days", schema=Renewal)
    second = await ctx.step.wait_for("second", event="renewed", timeout="7 days")
    return [first.plan if first else None, second]


def test_events_before_and_after_the_wait_duplicates_and_timeouts(
    make_engine: Make, clock: ManualClock
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[renewals]) as engine:
            # an event that arrives while the run waits wakes it
            run = await engine.start_workflow(renewals, resource_id="acme")
            await until(lambda: status(engine, run.id) == "waiting", "the first wait")
            await engine.trigger_event(run.id, "renewed", {"plan": "pro"}, resource_id="acme")
            await until(lambda: kinds(engine, run.id).count("wait") == 2, "the second wait")
            clock.advance(timedelta(days=7))  # the second wait times out
            assert await engine.result(run.id, timeout=10) == ["pro", None]
            # a late event is kept in the log but nothing waits for it any more
            with pytest.raises(durable.RunFinished):
                await engine.trigger_event(run.id, "renewed", {"plan": "late"})

            # events sent before the waits are kept and consumed oldest first, once each
            early = await engine.start_workflow(renewals)
            await until(lambda: status(engine, early.id) == "waiting", "the first wait")
            await engine.pause_workflow(early.id)  # hold it while both events arrive
            await engine.trigger_event(early.id, "renewed", {"plan": "a"})
            await engine.trigger_event(early.id, "renewed", {"plan": "b"})
            await engine.trigger_event(early.id, "renewed", {"plan": "c"})  # a duplicate, unused
            await engine.resume_workflow(early.id)
            assert await engine.result(early.id, timeout=10) == ["a", {"plan": "b"}]
            events = [r for r in engine.engine.history(early.id) if r.kind == "event"]
            assert [e.payload for e in events] == [{"plan": p} for p in "abc"]

    asyncio.run(main())


@durable.workflow("woken_together")
async def woken_together(ctx: durable.Context[None]) -> Any:
    got = await ctx.step.wait_for("go", event="go", schema=Renewal)
    return await ctx.step.run("after", wf_flows.counted("after", got.plan))


def test_runs_woken_together_each_record_their_event_then_go_on(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[woken_together]) as engine:
            runs = [await engine.start_workflow(woken_together) for _ in range(3)]
            for run in runs:
                await until(lambda run=run: status(engine, run.id) == "waiting", "the wait")
            # held while the events arrive, then released together (a pass may take all three)
            for run in runs:
                await engine.pause_workflow(run.id)
            for i, run in enumerate(runs):
                await engine.trigger_event(run.id, "go", {"plan": f"p{i}"})
            for run in runs:
                await engine.resume_workflow(run.id)
            for i, run in enumerate(runs):
                assert await engine.result(run.id, timeout=10) == f"p{i}"
                rows = engine.engine.history(run.id)
                wait_row = next(r for r in rows if r.kind == "step" and r.key == "go")
                event = next(r for r in rows if r.kind == "event")
                assert wait_row.meta["event_seq"] == event.seq
                assert wait_row.payload == {"result": {"plan": f"p{i}"}}
                assert [r.key for r in rows if r.kind == "step"] == ["go", "after"]

    asyncio.run(main())


def test_event_errors_change_nothing(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[renewals]) as engine:
            run = await engine.start_workflow(renewals, resource_id="acme")
            await until(lambda: status(engine, run.id) == "waiting", "the first wait")
            before = engine.engine.history(run.id)
            with pytest.raises(statewf.InvalidPayload, match="Renewal"):
                await engine.trigger_event(run.id, "renewed", {"plan": 3})
            with pytest.raises(durable.RunNotFound, match="bob"):
                await engine.trigger_event(run.id, "renewed", {"plan": "x"}, resource_id="bob")
            with pytest.raises(durable.RunNotFound):
                await engine.trigger_event("no-such-run", "renewed")
            with pytest.raises(statewf.InvalidInput):
                await engine.trigger_event(run.id, "")
            with pytest.raises(durable.ResultNotSerializable):
                await engine.trigger_event(run.id, "renewed", object())
            assert engine.engine.history(run.id) == before
            await engine.cancel_workflow(run.id)

    asyncio.run(main())


def test_pause_from_outside_stops_at_the_next_step_and_resume_continues(
    make_engine: Make,
) -> None:
    gate = asyncio.Event()

    async def blocked() -> str:
        await gate.wait()
        return "released"

    @durable.workflow("pausable")
    async def pausable(ctx: durable.Context[None]) -> str:
        await ctx.step.run("one", blocked)
        await ctx.step.run("two", wf_flows.counted("two", 2))
        await ctx.step.pause("manual-check")
        return await ctx.step.run("three", wf_flows.counted("three", 3))

    async def main() -> None:
        async with make_engine(workflows=[pausable]) as engine:
            run = await engine.start_workflow(pausable)
            await asyncio.sleep(0.05)
            paused = await engine.pause_workflow(run.id)
            assert paused.status == "paused"
            gate.set()  # step one finishes while paused: its result is kept, the run stops
            await until(lambda: run.id not in engine.executor.tasks, "the executor to stop")
            assert wf_flows.CALLS["two"] == 0
            await engine.resume_workflow(run.id)
            await until(lambda: status(engine, run.id) == "paused", "the in-code pause")
            assert wf_flows.CALLS["two"] == 1
            assert engine.engine.get(run.id).context["waiting"]["key"] == "manual-check"
            await engine.resume_workflow(run.id)
            assert await engine.result(run.id, timeout=10) == 3
            assert kinds(engine, run.id) == [
                "create",
                "pause",
                "step",
                "resume",
                "wake",
                "step",
                "pause",
                "resume",
                "wake",
                "step",
                "step",
                "completed",
            ]

    asyncio.run(main())
    assert wf_flows.CALLS["three"] == 1


def test_poll_records_each_check_and_times_out(make_engine: Make, clock: ManualClock) -> None:
    checks: list[int] = []

    def payment_done() -> dict[str, str] | None:
        checks.append(1)
        return {"id": "pay-1"} if len(checks) >= 3 else None

    @durable.workflow("polling")
    async def polling(ctx: durable.Context[None]) -> list[Any]:
        paid = await ctx.step.poll("payment", payment_done, interval="1 minute", timeout="1h")
        never = await ctx.step.poll("never", lambda: False, interval=60, timeout=120)
        return [paid.timed_out, paid.data, never.timed_out]

    async def main() -> None:
        async with make_engine(workflows=[polling]) as engine:
            run = await engine.start_workflow(polling)
            for n in (1, 2):
                await until(lambda n=n: kinds(engine, run.id).count("poll") == n, "a check")
                assert len(checks) == n
                clock.advance(60)
            await until(lambda: kinds(engine, run.id).count("poll") == 3, "the second poll")
            clock.advance(60)
            await until(lambda: kinds(engine, run.id).count("poll") == 4, "a check")
            clock.advance(60)
            assert await engine.result(run.id, timeout=10) == [False, {"id": "pay-1"}, True]
            polls = [r.meta["attempt"] for r in engine.engine.history(run.id) if r.kind == "poll"]
            assert polls == [1, 2, 1, 2]

        @durable.workflow("too-fast")
        async def too_fast(ctx: durable.Context[None]) -> None:
            await ctx.step.poll("x", lambda: True, interval=0.1)

        async with make_engine(workflows=[too_fast]) as engine:
            failed = await engine.wait_for_run((await engine.start_workflow(too_fast)).id)
            assert failed.error is not None
            assert failed.error.type == "InvalidInput"
            assert "at least 1s" in failed.error.message

    asyncio.run(main())


def test_fast_forward_skips_any_wait(make_engine: Make) -> None:
    @durable.workflow("all-waits")
    async def all_waits(ctx: durable.Context[None]) -> list[Any]:
        await ctx.step.sleep("long-sleep", "365 days")
        event = await ctx.step.wait_for("event", event="go")
        polled = await ctx.step.poll("poll", lambda: None, interval="1h")
        await ctx.step.pause("pause")
        return [event, polled.data]

    async def main() -> None:
        async with make_engine(workflows=[all_waits]) as engine:
            run = await engine.start_workflow(all_waits)
            for key, data in (
                ("long-sleep", None),
                ("event", {"ok": 1}),
                ("poll", "found"),
                ("pause", None),
            ):
                await until(
                    lambda k=key: (
                        (engine.engine.get(run.id).context.get("waiting") or {}).get("key") == k
                    ),
                    f"the {key} wait",
                )
                await engine.fast_forward_workflow(run.id, data)
            assert await engine.result(run.id, timeout=10) == [{"ok": 1}, "found"]
            with pytest.raises(durable.RunFinished):
                await engine.fast_forward_workflow(run.id)

    asyncio.run(main())


def test_approval_records_who_decided_and_a_rejection_is_visible(make_engine: Make) -> None:
    @durable.workflow("review")
    async def review(ctx: durable.Context[None]) -> dict[str, Any]:
        decision = await ctx.step.approval("publish")
        return decision.model_dump()

    async def main() -> None:
        async with make_engine(workflows=[review]) as engine:
            yes = await engine.start_workflow(review)
            no = await engine.start_workflow(review)
            for run in (yes, no):
                await until(lambda r=run: status(engine, r.id) == "waiting", "the approval")
            with pytest.raises(statewf.InvalidInput, match="reviewer"):
                await engine.approve(yes.id, reviewer="")
            await engine.approve(yes.id, reviewer="editor@acme.com", comment="fine")
            await engine.reject(no.id, reviewer="legal@acme.com", reason="needs citations")
            assert await engine.result(yes.id, timeout=10) == {
                "approved": True,
                "reviewer": "editor@acme.com",
                "reason": "fine",
                "answer": None,  # no schema: no answer asked for
            }
            assert await engine.result(no.id, timeout=10) == {
                "approved": False,
                "reviewer": "legal@acme.com",
                "reason": "needs citations",
                "answer": None,
            }
            (event,) = [r for r in engine.engine.history(no.id) if r.kind == "event"]
            assert event.event == "approval:publish"
            assert event.payload["reviewer"] == "legal@acme.com"
            with pytest.raises(durable.RunFinished):
                await engine.approve(yes.id, reviewer="x", step="publish")

    asyncio.run(main())


def test_two_schedulers_wake_every_due_run_exactly_once(
    make_engine: Make, clock: ManualClock, db: dict[str, str | None]
) -> None:
    woke: list[str] = []

    def after(run_id: str) -> str:
        woke.append(run_id)
        return run_id

    @durable.workflow("nap")
    async def nap(ctx: durable.Context[None]) -> str:
        await ctx.step.sleep("nap", "1h")
        return await ctx.step.run("after", after, ctx.run_id)

    async def main() -> None:
        first = make_engine(workflows=[nap])
        second = make_engine(workflows=[nap], recover=False)
        async with first, second:
            runs = [await first.start_workflow(nap) for _ in range(20)]
            await until(lambda: all(status(first, r.id) == "waiting" for r in runs), "all to sleep")
            clock.advance(3600)
            for run in runs:
                await first.wait_for_run(run.id, timeout=20)
            for run in runs:
                assert kinds(first, run.id).count("wake") == 1
        assert sorted(woke) == sorted(r.id for r in runs)  # each woke and ran once

    asyncio.run(main())


def test_deadline_ends_a_waiting_run(make_engine: Make, clock: ManualClock) -> None:
    @durable.workflow("bounded", timeout="1 day")
    async def bounded(ctx: durable.Context[None]) -> str:
        await ctx.step.wait_for("reply", event="reply")  # no timeout of its own
        return "replied"

    async def main() -> None:
        async with make_engine(workflows=[bounded]) as engine:
            run = await engine.start_workflow(bounded)
            await until(lambda: status(engine, run.id) == "waiting", "the wait")
            assert engine.engine.get(run.id).wake_at == clock.now() + timedelta(days=1)
            clock.advance(timedelta(days=1))
            done = await engine.wait_for_run(run.id, timeout=10)
            assert done.status == "failed"
            assert done.error is not None
            assert done.error.type == "WorkflowTimeout"

    asyncio.run(main())


def test_waits_are_positional_steps_for_replay(make_engine: Make, clock: ManualClock) -> None:
    @durable.workflow("changed", version="1")
    async def before(ctx: durable.Context[None]) -> None:
        await ctx.step.sleep("nap", 60)

    @durable.workflow("changed", version="1")
    async def after(ctx: durable.Context[None]) -> None:
        await ctx.step.run("nap", lambda: 1)  # same key, another kind of step

    async def main() -> None:
        async with make_engine(workflows=[before]) as engine:
            run = await engine.start_workflow(before)
            await until(lambda: status(engine, run.id) == "waiting", "the sleep")
        clock.advance(60)
        async with make_engine(workflows=[after]) as engine:
            done = await engine.wait_for_run(run.id, timeout=10)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "NonDeterminismError"
        assert "nap (sleep)" in done.error.message

    asyncio.run(main())


def test_wait_until_accepts_aware_datetimes(make_engine: Make, clock: ManualClock) -> None:
    when = datetime(2030, 6, 1, 9, 0, tzinfo=UTC)

    @durable.workflow("launch")
    async def launch(ctx: durable.Context[None]) -> str:
        await ctx.step.wait_until("launch", when)
        return "go"

    async def main() -> None:
        async with make_engine(workflows=[launch]) as engine:
            run = await engine.start_workflow(launch)
            await until(lambda: status(engine, run.id) == "waiting", "the wait")
            assert engine.engine.get(run.id).wake_at == when
            clock.set(when)
            assert await engine.result(run.id, timeout=10) == "go"

    asyncio.run(main())


def test_an_event_from_another_process_wakes_the_run_at_once_on_postgres(
    make_engine: Make, db: dict[str, str | None]
) -> None:
    if not db["url"] or not db["url"].startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite schedulers poll")

    @durable.workflow("notified")
    async def notified(ctx: durable.Context[None]) -> Any:
        return await ctx.step.wait_for("go", event="go")

    async def main() -> None:
        # the scheduler would poll only every 60 s: a quick wake-up must be the NOTIFY
        async with make_engine(workflows=[notified], poll_interval=60) as engine:
            run = await engine.start_workflow(notified)
            await until(lambda: status(engine, run.id) == "waiting", "the wait")
            await asyncio.sleep(0.3)  # the listener is connected
            other = statewf.Engine(db["url"], schema=db["schema"])
            sender = durable.WorkflowEngine(other, recover=False)
            await sender.trigger_event(run.id, "go", {"n": 1})
            await sender.close()
            other.close()
            assert await engine.result(run.id, timeout=5) == {"n": 1}

    asyncio.run(main())
