"""Pure parts of durable: static analysis, durations, codec, progress and timelines."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import durable
import statewf
from durable.authoring.analysis import analyze
from durable.execution.timing import WakeLoop
from durable.log.codec import decode, encode
from durable.log.plan import StepPlan
from durable.log.views import progress_of, timeline_of
from statewf.clock import SystemClock
from statewf.durations import to_seconds
from statewf.errors import StoreError
from statewf.fold import apply
from statewf.records import Instance, TransitionRecord

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Point(BaseModel):
    x: int


async def straight(ctx: Any) -> None:
    await ctx.step.run("a", print)
    await ctx.step.transaction("b", print)
    step = ctx.step
    await step.sleep("c", 1)


async def looping(ctx: Any) -> None:
    for i in range(3):
        await ctx.step.run(f"item-{i}", print)


async def branching(ctx: Any) -> None:
    try:
        await ctx.step.run("try", print)
    except Exception:
        await ctx.step.run("undo", print)


def test_static_analysis_counts_call_sites_and_says_when_it_guesses() -> None:
    assert analyze(straight) == StepPlan(3, False, ("a", "b", "c"))
    assert analyze(looping) == StepPlan(1, True, ("item-{i}",))
    assert analyze(branching) == StepPlan(2, True, ("try", "undo"))
    assert analyze(eval("lambda ctx: ctx")) == StepPlan(None, True)  # no source
    assert StepPlan.from_json(StepPlan(2, False, ("a", "b")).to_json()) == StepPlan(
        2, False, ("a", "b")
    )
    assert StepPlan.from_json("garbage") == StepPlan(None, True)


def test_durations() -> None:
    assert to_seconds("1h 30m") == 5400.0
    assert to_seconds({"days": 1}) == 86400.0
    assert to_seconds(timedelta(minutes=2)) == 120.0
    for bad in ("soon", -1, True, "3 fortnights"):
        with pytest.raises(statewf.InvalidInput, match="timeout"):
            to_seconds(bad, what="timeout")


def test_codec_round_trips_json_and_models_and_rejects_the_rest() -> None:
    assert encode({"a": [1, 2.5, None]}, what="x", max_bytes=100) == ({"a": [1, 2.5, None]}, None)
    data, model = encode(Point(x=1), what="x", max_bytes=100)
    assert (data, model) == ({"x": 1}, "test_wf_units:Point")
    assert decode(data, model) == Point(x=1)
    assert decode(data, "nowhere:Nothing") == {"x": 1}
    with pytest.raises(durable.ResultNotSerializable, match="pydantic model"):
        encode(object(), what="result of step 'x'", max_bytes=100)
    with pytest.raises(durable.ResultNotSerializable, match="limit"):
        encode("x" * 200, what="result", max_bytes=100)


def _log(*rows: dict[str, Any]) -> tuple[list[TransitionRecord], Instance]:
    create = TransitionRecord(
        instance_id="r",
        seq=1,
        kind="create",
        target=("start",),
        context_set={"input": None, "plan": StepPlan(3, False).to_json(), "completed_steps": 0},
        status="running",
        meta={"machine": "w", "machine_version": "1", "kind": "workflow"},
        created_at=T0,
    )
    records = [create]
    snap = apply(None, create)
    for i, row in enumerate(rows, start=2):
        record = TransitionRecord(
            instance_id="r", seq=i, created_at=T0 + timedelta(seconds=i), **row
        )
        records.append(record)
        snap = apply(snap, record)
    return records, snap


def test_timeline_and_progress_from_the_log_alone() -> None:
    error = {"type": "ConnectionError", "message": "503", "step": "b", "details": {}}
    records, snap = _log(
        {
            "kind": "step",
            "key": "a",
            "payload": {"result": 1},
            "status": "running",
            "meta": {"position": 0, "attempt": 1, "duration_ms": 2.0},
            "context_set": {"completed_steps": 1},
        },
        {
            "kind": "retry",
            "key": "b",
            "payload": {"error": error},
            "status": "running",
            "meta": {"position": 1, "attempt": 1, "retry_at": "2030-01-01T00:01:00+00:00"},
        },
    )
    timeline = timeline_of(records)
    assert [(t.key, t.status, len(t.attempts)) for t in timeline] == [
        ("a", "completed", 1),
        ("b", "retrying", 1),
    ]
    assert timeline[1].attempts[0].retry_at == T0 + timedelta(minutes=1)
    progress = progress_of(snap)
    assert (progress.completed_steps, progress.total_steps) == (1, 3)
    assert progress.completion_percentage == pytest.approx(33.3)
    assert progress.approximate is False


def test_a_poke_during_a_pass_is_not_lost() -> None:
    """A poke that arrives while a pass runs (a NOTIFY committed after the pass's claim
    read) makes another pass, rather than waiting for the next poll."""

    async def scenario() -> int:
        passes: list[int] = []

        async def work() -> None:
            passes.append(1)
            if len(passes) == 1:
                loop.poke()  # arrives during the first pass
            return

        loop = WakeLoop("test", work, SystemClock(), poll_interval=600)
        loop.start()
        for _ in range(400):  # the poll is ten minutes away: only the poke explains a second pass
            if len(passes) >= 2:
                break
            await asyncio.sleep(0.01)
        await loop.stop()
        return len(passes)

    assert asyncio.run(scenario()) >= 2


def test_a_pass_that_fails_with_a_bug_is_logged_loudly_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outage is a warning; any other exception in a pass is a bug: an error with
    its traceback (a claim that kept failing that way once stalled a worker with no
    sign), and the next pass still runs."""

    async def scenario() -> int:
        passes: list[int] = []

        async def work() -> None:
            passes.append(1)
            if len(passes) == 1:
                loop.poke()  # the next pass comes at once, not at the poll
                raise IndexError("tuple index out of range")
            if len(passes) == 2:
                loop.poke()
                raise StoreError("database error on x: connection refused")

        loop = WakeLoop("test", work, SystemClock(), poll_interval=600)
        loop.start()
        for _ in range(400):
            if len(passes) >= 3:
                break
            await asyncio.sleep(0.01)
        await loop.stop()
        return len(passes)

    with caplog.at_level(logging.WARNING, logger="durable"):
        assert asyncio.run(scenario()) >= 3
    bug = [r for r in caplog.records if r.exc_info and r.exc_info[0] is IndexError]
    assert [r.levelno for r in bug] == [logging.ERROR]
    outage = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in outage] == [(logging.WARNING, None)]
