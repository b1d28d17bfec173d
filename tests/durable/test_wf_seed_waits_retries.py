"""Seed features of waits and retries: ``timeout_value``, the forms of ``wait_until``,
and fixed, linear and exponential backoff on steps, workflows and pipeline steps."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import wf_flows
from hypothesis import given
from hypothesis import strategies as st
from wf_flows import Make, kinds, until

import durable
from statewf.durations import parse_instant
from statewf.errors import InvalidInput
from statewf.testing import ManualClock


def status(engine: durable.WorkflowEngine, run_id: str) -> str:
    return engine.engine.get(run_id).status


@durable.workflow("reply-or-default")
async def reply_or_default(ctx: durable.Context[None]) -> list[Any]:
    reply = await ctx.step.wait_for(
        "reply", event="replied", timeout="1 day", timeout_value={"answer": "no reply"}
    )
    await ctx.step.sleep("cool-down", "1 hour")
    return [reply, await ctx.step.run("after", wf_flows.counted("after", "done"))]


def test_a_timed_out_wait_returns_timeout_value_also_on_replay(
    make_engine: Make, clock: ManualClock
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[reply_or_default]) as engine:
            run = await engine.start_workflow(reply_or_default)
            await until(lambda: status(engine, run.id) == "waiting", "the wait")
            clock.advance(timedelta(days=1))
            await until(lambda: kinds(engine, run.id).count("sleep") == 1, "the cool-down")
            (outcome,) = [
                r for r in engine.engine.history(run.id) if r.kind == "step" and r.key == "reply"
            ]
            assert outcome.meta["timed_out"] is True
            assert outcome.payload == {"result": None}  # the default is code, not data
        clock.advance(timedelta(hours=1))
        async with make_engine(workflows=[reply_or_default]) as engine:  # replays the wait
            assert await engine.result(run.id, timeout=10) == [{"answer": "no reply"}, "done"]
            # an event that does come is returned as sent, even a null one
            answered = await engine.start_workflow(reply_or_default)
            await until(lambda: status(engine, answered.id) == "waiting", "the wait")
            await engine.trigger_event(answered.id, "replied", None)
            await until(lambda: kinds(engine, answered.id).count("sleep") == 1, "the cool-down")
            clock.advance(timedelta(hours=1))
            assert await engine.result(answered.id, timeout=10) == [None, "done"]

    asyncio.run(main())


@durable.workflow("launch")
async def launch(ctx: durable.Context[Any]) -> str:
    when = ctx.input
    if isinstance(when, dict) and when.get("as") == "date":
        when = date.fromisoformat(when["value"])
    await ctx.step.wait_until("launch", when)
    return "launched"


@pytest.mark.parametrize(
    ("when", "wake_at"),
    [
        ("2031-03-04", datetime(2031, 3, 4, tzinfo=UTC)),
        ({"date": "2031-03-04"}, datetime(2031, 3, 4, tzinfo=UTC)),
        ({"date": "2031-03-04T10:00:00+02:00"}, datetime(2031, 3, 4, 8, tzinfo=UTC)),
        ({"as": "date", "value": "2031-03-04"}, datetime(2031, 3, 4, tzinfo=UTC)),
        ("2031-03-04T10:00:00Z", datetime(2031, 3, 4, 10, tzinfo=UTC)),
    ],
)
def test_wait_until_reads_dates_strings_and_date_mappings(
    make_engine: Make, when: Any, wake_at: datetime
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[launch]) as engine:
            run = await engine.start_workflow(launch, when)
            await until(lambda: status(engine, run.id) == "waiting", "the wait")
            assert engine.engine.get(run.id).wake_at == wake_at

    asyncio.run(main())


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("2031-02-30", "not a calendar date"),
        ("next tuesday", "cannot read 'next tuesday'"),
        ("2031-03-04T10:00:00", "no time zone"),
        ({"day": "2031-03-04"}, "must be {'date': ...}"),
        (1234, "expected a datetime, a date"),
    ],
)
def test_wait_until_refuses_what_it_cannot_read(make_engine: Make, when: Any, message: str) -> None:
    async def main() -> None:
        async with make_engine(workflows=[launch]) as engine:
            run = await engine.wait_for_run((await engine.start_workflow(launch, when)).id)
            assert run.status == "failed"
            assert run.error is not None
            assert run.error.type == "InvalidInput"
            assert message in run.error.message

    asyncio.run(main())


def failing(name: str, failures: int) -> Any:
    def step() -> str:
        wf_flows.CALLS[name] += 1
        if wf_flows.CALLS[name] <= failures:
            raise ConnectionError(f"{name} failure {wf_flows.CALLS[name]}")
        return "ok"

    return step


async def recorded_delays(
    engine: durable.WorkflowEngine, clock: ManualClock, run_id: str, retries: int, seen: int = 0
) -> list[float]:
    """Let ``retries`` more retries (after ``seen``) happen; the delay recorded for each."""
    delays: list[float] = []
    for n in range(seen + 1, seen + retries + 1):
        await until(lambda n=n: kinds(engine, run_id).count("retry") == n, "a retry")
        row = [r for r in engine.engine.history(run_id) if r.kind == "retry"][-1]
        due = datetime.fromisoformat(row.meta["retry_at"])
        delays.append(round((due - clock.now()).total_seconds(), 6))
        clock.advance(due - clock.now())
    return delays


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (durable.RetryPolicy(retries=3, delay=10, backoff="fixed", jitter=0), [10, 10, 10]),
        (durable.RetryPolicy(retries=3, delay=10, backoff="linear", jitter=0), [10, 20, 30]),
        (
            durable.RetryPolicy(retries=3, delay=10, backoff="exponential", factor=3, jitter=0),
            [10, 30, 90],
        ),
        (durable.RetryPolicy(retries=3, delay=10, backoff=2.0, jitter=0), [10, 20, 40]),
        (
            durable.RetryPolicy(retries=3, delay=10, backoff="linear", max_delay=25, jitter=0),
            [10, 20, 25],
        ),
    ],
)
def test_backoff_strategies_on_a_step(
    make_engine: Make, clock: ManualClock, policy: durable.RetryPolicy, expected: list[float]
) -> None:
    @durable.workflow("backoffs")
    async def backoffs(ctx: durable.Context[None]) -> str:
        return await ctx.step.run("call", failing("call", 3), retry=policy)

    async def main() -> None:
        async with make_engine(workflows=[backoffs]) as engine:
            run = await engine.start_workflow(backoffs)
            assert await recorded_delays(engine, clock, run.id, 3) == expected
            assert await engine.result(run.id, timeout=10) == "ok"

    asyncio.run(main())


def test_retry_delay_alone_is_a_constant_delay_on_workflows_and_pipelines(
    make_engine: Make, clock: ManualClock
) -> None:
    @durable.workflow("constant", retries=3, retry_delay=10)
    async def constant(ctx: durable.Context[None]) -> str:
        return await ctx.step.run("call", failing("wf", 3))  # the workflow's policy

    wf = durable.Pipeline("linear-pipeline")

    @wf.step("fetch", retry=durable.RetryPolicy(retries=3, delay=5, backoff="linear", jitter=0))
    def fetch() -> str:
        return str(failing("pipe", 3)())

    @wf.step("store", retries=2, retry_delay=7)
    def store(value: str) -> str:
        wf_flows.CALLS["store"] += 1
        if wf_flows.CALLS["store"] <= 2:
            raise ConnectionError("busy")
        return f"stored {value}"

    async def main() -> None:
        async with make_engine(workflows=[constant, wf]) as engine:
            run = await engine.start_workflow(constant)
            delays = await recorded_delays(engine, clock, run.id, 3)
            assert all(9 <= d <= 10 for d in delays), delays  # default jitter 0.1, no growth
            assert await engine.result(run.id, timeout=10) == "ok"

            piped = await engine.start_workflow(wf)
            assert await recorded_delays(engine, clock, piped.id, 3) == [5, 10, 15]
            stored = await recorded_delays(engine, clock, piped.id, 2, seen=3)
            assert all(6.3 <= d <= 7 for d in stored), stored
            assert await engine.result(piped.id, timeout=10) == "stored ok"

    asyncio.run(main())


def test_retry_delay_with_a_policy_keeps_the_policy_backoff() -> None:
    policy = durable.RetryPolicy(retries=1, backoff="linear", jitter=0)
    workflow = durable.workflow("keeps", retry=policy, retry_delay=4)(launch.fn)
    assert workflow.retry.backoff == "linear"
    assert [workflow.retry.base_delay(n) for n in (1, 2, 3)] == [4, 8, 12]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff": "quadratic"}, "backoff must be one of fixed, linear, exponential"),
        ({"backoff": 0.5}, "backoff must be one of"),
        ({"factor": 0.5}, "factor must be >= 1.0"),
    ],
)
def test_bad_backoffs_are_definition_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(durable.WorkflowDefinitionError, match=message):
        durable.RetryPolicy(**kwargs)


@given(
    backoff=st.sampled_from(["fixed", "linear", "exponential", 1.0, 1.5, 3.0]),
    delay=st.floats(0, 100),
    cap=st.floats(0, 500),
    jitter=st.floats(0, 1),
    rand=st.floats(0, 1),
    n=st.integers(1, 30),
)
def test_delays_never_exceed_the_cap_nor_shrink_between_retries(
    backoff: Any, delay: float, cap: float, jitter: float, rand: float, n: int
) -> None:
    policy = durable.RetryPolicy(delay=delay, backoff=backoff, max_delay=cap, jitter=jitter)
    assert policy.base_delay(n) <= policy.base_delay(n + 1) <= cap + 1e-6  # microseconds
    assert (1 - jitter) * policy.base_delay(n) - 1e-9 <= policy.delay_before(n, lambda: rand)
    assert policy.delay_before(n, lambda: rand) <= policy.base_delay(n) + 1e-9


def test_a_date_mapping_holds_one_instant() -> None:
    with pytest.raises(InvalidInput, match="not a mapping"):
        parse_instant({"date": {"date": "2031-01-01"}})
    assert parse_instant(date(2031, 1, 1)) == datetime(2031, 1, 1, tzinfo=UTC)
