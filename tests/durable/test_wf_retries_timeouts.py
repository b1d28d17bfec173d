"""Retries and timeouts, driven by a manual clock: no real waiting beyond milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import wf_flows
from wf_flows import Make, kinds, until

import durable
from statewf.testing import ManualClock


def flaky(name: str, failures: int, exc: type[Exception] = ConnectionError) -> Callable[[], str]:
    """Fails the first ``failures`` calls, then returns ``"ok"``."""

    def step() -> str:
        wf_flows.CALLS[name] += 1
        if wf_flows.CALLS[name] <= failures:
            raise exc(f"{name} failure {wf_flows.CALLS[name]}")
        return "ok"

    return step


def test_exponential_backoff_capped_each_attempt_recorded(
    make_engine: Make, clock: ManualClock
) -> None:
    policy = durable.RetryPolicy(retries=5, delay=10, backoff=2.0, max_delay=25, jitter=0)

    @durable.workflow("backoff")
    async def backoff(ctx: durable.Context[None]) -> str:
        return await ctx.step.run("call-api", flaky("api", 3), retry=policy)

    async def main() -> None:
        async with make_engine(workflows=[backoff]) as engine:
            t0 = clock.now()
            run = await engine.start_workflow(backoff)
            for attempt, delay in ((1, 10), (2, 20), (3, 25)):
                await until(lambda a=attempt: kinds(engine, run.id).count("retry") == a, "retry")
                retry = [r for r in engine.engine.history(run.id) if r.kind == "retry"][-1]
                assert retry.meta["attempt"] == attempt
                assert retry.payload["error"]["type"] == "ConnectionError"
                assert retry.payload["error"]["message"] == f"api failure {attempt}"
                retry_at = datetime.fromisoformat(retry.meta["retry_at"])
                assert retry_at == clock.now() + timedelta(seconds=delay)
                clock.advance(delay - 1)
                await asyncio.sleep(0.03)
                assert wf_flows.CALLS["api"] == attempt  # not retried before its time
                clock.advance(1)
            assert await engine.result(run.id) == "ok"
            assert clock.now() - t0 == timedelta(seconds=55)
            timeline = await engine.get_timeline(run.id)
            (step,) = timeline
            assert step.status == "completed"
            assert [a.attempt for a in step.attempts] == [1, 2, 3, 4]
            assert [a.error.type if a.error else None for a in step.attempts] == [
                "ConnectionError",
                "ConnectionError",
                "ConnectionError",
                None,
            ]
            assert kinds(engine, run.id) == [
                "create",
                "retry",
                "retry",
                "retry",
                "step",
                "completed",
            ]

    asyncio.run(main())
    assert wf_flows.CALLS["api"] == 4


def test_exhausted_retries_fail_the_run_with_the_error_stored(
    make_engine: Make, clock: ManualClock
) -> None:
    @durable.workflow("exhaust", retries=2, retry_delay=5)
    async def exhaust(ctx: durable.Context[None]) -> str:
        return await ctx.step.run("always-fails", flaky("x", 99))  # the workflow's default: 2

    async def main() -> None:
        async with make_engine(workflows=[exhaust]) as engine:
            run = await engine.start_workflow(exhaust)
            for n in (1, 2):
                await until(lambda n=n: kinds(engine, run.id).count("retry") == n, "retry")
                clock.advance(60)
            done = await engine.wait_for_run(run.id)
            assert done.status == "failed"
            assert done.error is not None
            assert done.error.type == "StepFailed"
            assert done.error.step == "always-fails"
            assert done.error.details["error_type"] == "ConnectionError"
            assert done.error.details["attempts"] == 3
            assert kinds(engine, run.id) == ["create", "retry", "retry", "step_failed", "failed"]

    asyncio.run(main())
    assert wf_flows.CALLS["x"] == 3


def test_non_retryable_errors_and_retry_on_filters(make_engine: Make) -> None:
    class CardDeclined(durable.NonRetryableError):
        pass

    @durable.workflow("no-retry", retries=5)
    async def no_retry(ctx: durable.Context[None]) -> list[str]:
        caught = []
        try:
            await ctx.step.run("declined", flaky("declined", 99, CardDeclined))
        except durable.StepFailed as exc:
            caught.append(f"{exc.error_type}/{exc.attempts}")
        only_io = durable.RetryPolicy(retries=5, retry_on=(ConnectionError,))
        try:
            await ctx.step.run("value", flaky("value", 99, ValueError), retry=only_io)
        except durable.StepFailed as exc:
            caught.append(f"{exc.error_type}/{exc.attempts}")
        never_key = durable.RetryPolicy(retries=5, no_retry_on=(KeyError,))
        try:
            await ctx.step.run("key", flaky("key", 99, KeyError), retry=never_key)
        except durable.StepFailed as exc:
            caught.append(f"{exc.error_type}/{exc.attempts}")
        return caught

    async def main() -> None:
        async with make_engine(workflows=[no_retry]) as engine:
            out = await engine.result((await engine.start_workflow(no_retry)).id)
            assert out == ["CardDeclined/1", "ValueError/1", "KeyError/1"]

    asyncio.run(main())


def test_jittered_delays_stay_in_range() -> None:
    policy = durable.RetryPolicy(retries=9, delay=1, backoff=3, max_delay=60, jitter=0.5)
    assert policy.delay_before(1, lambda: 0.0) == 1.0
    assert policy.delay_before(1, lambda: 1.0) == 0.5
    assert policy.delay_before(3, lambda: 0.0) == 9.0
    assert policy.delay_before(9, lambda: 0.0) == 60.0  # capped
    assert policy.max_attempts == 10
    with pytest.raises(durable.WorkflowDefinitionError):
        durable.RetryPolicy(retries=-1)
    with pytest.raises(durable.WorkflowDefinitionError):
        durable.RetryPolicy(jitter=2)


def test_step_timeout_is_enforced_on_the_manual_clock(
    make_engine: Make, clock: ManualClock
) -> None:
    never = asyncio.Event()

    async def hang() -> str:
        wf_flows.CALLS["hang"] += 1
        await never.wait()
        return "impossible"

    @durable.workflow("slow-step")
    async def slow(ctx: durable.Context[None]) -> str:
        try:
            return await ctx.step.run("hang", hang, timeout="30s", retries=1, retry_delay=1)
        except durable.StepFailed as exc:
            return f"gave up: {exc.error_type} after {exc.attempts}"

    async def main() -> None:
        async with make_engine(workflows=[slow]) as engine:
            run = await engine.start_workflow(slow)
            await until(lambda: wf_flows.CALLS["hang"] == 1, "first attempt")
            clock.advance(29)
            await asyncio.sleep(0.03)
            assert kinds(engine, run.id) == ["create"]  # not timed out yet
            clock.advance(1)
            await until(lambda: "retry" in kinds(engine, run.id), "timeout of attempt 1")
            clock.advance(1)  # the retry delay
            await until(lambda: wf_flows.CALLS["hang"] == 2, "second attempt")
            clock.advance(30)
            assert await engine.result(run.id) == "gave up: StepTimeout after 2"

    asyncio.run(main())


def test_workflow_timeout_fails_the_run(make_engine: Make, clock: ManualClock) -> None:
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    @durable.workflow("deadline", timeout="1h")
    async def deadline(ctx: durable.Context[None]) -> str:
        await ctx.step.run("quick", lambda: 1)
        with contextlib.suppress(asyncio.CancelledError):
            await ctx.step.run("hang", hang)  # swallowing the cancellation does not save the run
        await ctx.step.run("after", wf_flows.counted("after", 1))
        return "finished"

    async def main() -> None:
        async with make_engine(workflows=[deadline]) as engine:
            run = await engine.start_workflow(deadline)
            assert run.deadline == clock.now() + timedelta(hours=1)
            await until(lambda: "step" in kinds(engine, run.id), "first step")
            clock.advance(3599)
            await asyncio.sleep(0.03)
            assert (await engine.get_run(run.id)).status == "running"
            clock.advance(1)
            done = await engine.wait_for_run(run.id)
            assert done.status == "failed"
            assert done.error is not None
            assert done.error.type == "WorkflowTimeout"
            assert kinds(engine, run.id) == ["create", "step", "failed"]

    asyncio.run(main())
    assert wf_flows.CALLS["after"] == 0


def test_deadline_that_passed_while_no_process_ran_fails_on_recovery(
    make_engine: Make, clock: ManualClock
) -> None:
    @durable.workflow("deadline-2", timeout=60)
    async def deadline(ctx: durable.Context[None]) -> str:
        await ctx.step.run("one", lambda: 1)
        await ctx.step.run("two", wf_flows.counted("two", 2))
        return "done"

    async def main() -> None:
        with wf_flows.crash_at_write(2, after_commit=False):
            async with make_engine(workflows=[deadline]) as engine:
                run = await engine.start_workflow(deadline)
                with pytest.raises(wf_flows.Crash):
                    await engine.wait_for_run(run.id)
        clock.advance(120)  # every process was down past the deadline
        async with make_engine(workflows=[deadline]) as engine:
            done = await engine.wait_for_run(run.id, timeout=10)
        assert done.status == "failed"
        assert done.error is not None
        assert done.error.type == "WorkflowTimeout"

    asyncio.run(main())
    assert wf_flows.CALLS["two"] == 1  # ran once before the crash, not again after it


def test_retry_schedule_and_attempt_count_survive_a_restart(
    make_engine: Make, clock: ManualClock
) -> None:
    @durable.workflow("retry-restart")
    async def retry_restart(ctx: durable.Context[None]) -> Any:
        try:
            return await ctx.step.run("flaky", flaky("flaky", 99), retries=1, retry_delay=10)
        except durable.StepFailed as exc:
            return exc.attempts

    async def main() -> None:
        engine = make_engine(workflows=[retry_restart])
        run = await engine.start_workflow(retry_restart)
        await until(lambda: "retry" in kinds(engine, run.id), "first failure")
        await engine.close()  # the process goes away during the backoff
        assert wf_flows.CALLS["flaky"] == 1
        async with make_engine(workflows=[retry_restart]) as engine:
            await asyncio.sleep(0.03)
            assert wf_flows.CALLS["flaky"] == 1  # still waiting for the recorded retry time
            clock.advance(10)
            assert await engine.result(run.id) == 2  # one retry in total, across the restart
            assert kinds(engine, run.id) == [
                "create",
                "retry",
                "recover",
                "step_failed",
                "completed",
            ]

    asyncio.run(main())
    assert wf_flows.CALLS["flaky"] == 2
