"""``ctx.logger`` (bound to the run and the step) and ``ctx.timeline`` (the steps so far)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import wf_flows
from wf_flows import Make, until

import durable
from durable.observe import configure_logging
from statewf.testing import ManualClock


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """configure_logging() into a buffer; the loggers' handlers and levels come back after."""
    loggers = [logging.getLogger(name) for name in ("durable", "statewf")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    buffer = io.StringIO()
    configure_logging(stream=buffer, level="info")
    yield buffer
    for lg, handlers, level in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)


def workflow_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [line for line in found if line["logger"] == "durable.workflow"]


@durable.workflow("narrated")
async def narrated(ctx: durable.Context[None]) -> dict[str, Any]:
    seen = {"start": [s.key for s in ctx.timeline]}
    await ctx.step.run("fetch", wf_flows.counted("fetch", {"rows": 3}))
    ctx.logger.info("fetched", extra={"rows": 3})
    seen["after-fetch"] = [s.key for s in ctx.timeline]

    def report() -> str:
        ctx.logger.warning("reporting on %s", "fetch")
        return "reported"

    await ctx.step.run("report", report)
    await ctx.step.sleep("nap", "1 hour")
    ctx.logger.info("woke")
    seen["end"] = [(s.key, s.status, s.result) for s in ctx.timeline]
    return seen


def test_logger_lines_carry_run_and_step_and_the_timeline_grows(
    make_engine: Make, clock: ManualClock, out: io.StringIO
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[narrated]) as engine:
            run = await engine.start_workflow(narrated)
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the nap")
            clock.advance(timedelta(hours=1))
            result = await engine.result(run.id, timeout=10)
            assert result == {
                "start": [],
                "after-fetch": ["fetch"],
                "end": [
                    ["fetch", "completed", {"rows": 3}],
                    ["report", "completed", "reported"],
                    ["nap", "completed", None],
                ],
            }
            return run.id

    run_id = asyncio.run(main())
    got = [
        {k: line.get(k) for k in ("message", "level", "run_id", "step", "attempt", "replaying")}
        | ({"rows": line["rows"]} if "rows" in line else {})
        for line in workflow_lines(out)
    ]
    assert got == [
        {"message": "fetched", "level": "INFO", "run_id": run_id, "step": None,
         "attempt": None, "replaying": None, "rows": 3},
        {"message": "reporting on fetch", "level": "WARNING", "run_id": run_id,
         "step": "report", "attempt": 1, "replaying": None},
        # the second execution after the nap replays the code before it
        {"message": "fetched", "level": "INFO", "run_id": run_id, "step": None,
         "attempt": None, "replaying": True, "rows": 3},
        {"message": "woke", "level": "INFO", "run_id": run_id, "step": None,
         "attempt": None, "replaying": None},
    ]  # fmt: skip
    assert all(line["workflow"] == "narrated" for line in workflow_lines(out))
    assert wf_flows.CALLS["fetch"] == 1


def test_the_timeline_holds_failed_steps_and_is_read_only(make_engine: Make) -> None:
    @durable.workflow("timeline-failures")
    async def failures(ctx: durable.Context[None]) -> list[Any]:
        def boom() -> None:
            raise ValueError("no")

        with contextlib.suppress(durable.StepFailed):
            await ctx.step.run("boom", boom)
        (step,) = ctx.timeline
        with pytest.raises(Exception, match="frozen"):
            step.key = "other"  # type: ignore[misc]
        assert isinstance(ctx.timeline, tuple)
        return [step.key, step.status, step.error.type if step.error else None]

    async def main() -> None:
        async with make_engine(workflows=[failures]) as engine:
            run = await engine.start_workflow(failures)
            assert await engine.result(run.id, timeout=10) == ["boom", "failed", "ValueError"]

    asyncio.run(main())
