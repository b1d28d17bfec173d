"""Changing a workflow while its runs are in flight: ``ctx.patched`` recorded in the log,
``ctx.deprecate_patch``, several versions served at once, and runs no code serves."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from wf_flows import Make, until

import durable
from statewf.testing import ManualClock

SENT: list[str] = []


def create_account(email: str) -> dict[str, str]:
    SENT.append(f"account {email}")
    return {"id": f"user-{email}"}


def send_sms(user: dict[str, str]) -> str:
    SENT.append(f"sms {user['id']}")
    return "sms sent"


def welcome(user: dict[str, str]) -> str:
    SENT.append(f"welcome {user['id']}")
    return "welcomed"


@durable.workflow("onboard", version="1")
async def onboard_v1(ctx: durable.Context[Any]) -> list[str]:
    user = await ctx.step.run("create-account", create_account, ctx.input["email"])
    await ctx.step.sleep("cool-off", "30 days")
    return [await ctx.step.run("welcome", welcome, user)]


@durable.workflow("onboard", version="1")
async def onboard_v1_patched(ctx: durable.Context[Any]) -> list[str]:
    user = await ctx.step.run("create-account", create_account, ctx.input["email"])
    done = []
    if ctx.patched("send-sms-too"):
        done.append(await ctx.step.run("send-sms", send_sms, user))
    await ctx.step.sleep("cool-off", "30 days")
    return [*done, await ctx.step.run("welcome", welcome, user)]


@durable.workflow("onboard", version="1")
async def onboard_v1_deprecated(ctx: durable.Context[Any]) -> list[str]:
    user = await ctx.step.run("create-account", create_account, ctx.input["email"])
    ctx.deprecate_patch("send-sms-too")
    done = [await ctx.step.run("send-sms", send_sms, user)]
    await ctx.step.sleep("cool-off", "30 days")
    return [*done, await ctx.step.run("welcome", welcome, user)]


@durable.workflow("onboard", version="2")
async def onboard_v2(ctx: durable.Context[Any]) -> list[str]:
    user = await ctx.step.run("create-account", create_account, ctx.input["email"])
    sms = await ctx.step.run("send-sms", send_sms, user)
    return [sms, await ctx.step.run("welcome", welcome, user)]


def _patch_rows(engine: durable.WorkflowEngine, run_id: str) -> list[tuple[str | None, bool]]:
    return [(r.key, r.meta["patched"]) for r in engine.engine.history(run_id) if r.kind == "patch"]


def _status(engine: durable.WorkflowEngine, run_id: str) -> str:
    return engine.engine.get(run_id).status


@pytest.fixture(autouse=True)
def _clear_sent() -> None:
    SENT.clear()


def test_a_run_asleep_for_30_days_on_v1_completes_on_its_own_branch_on_a_v1_v2_engine(
    make_engine: Make, clock: ManualClock
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[onboard_v1], poll_interval=0.02) as engine:
            old = await engine.start_workflow(onboard_v1, {"email": "old@x"})
            await until(lambda: _status(engine, old.id) == "waiting", "the 30-day sleep")
        assert SENT == ["account old@x"]
        # the deploy: version 1 patched, and a version 2, served by one engine
        served = [onboard_v1_patched, onboard_v2]
        async with make_engine(workflows=served, poll_interval=0.02) as engine:
            new = await engine.start_workflow("onboard", {"email": "new@x"})
            assert new.version == "2"  # a new run starts on the newest version
            assert await engine.result(new.id, timeout=10) == ["sms sent", "welcomed"]
            fresh = await engine.start_workflow(onboard_v1_patched, {"email": "v1@x"})
            await until(lambda: _status(engine, fresh.id) == "waiting", "v1's sleep")
            # the new v1 run reached the patch fresh: the new branch, recorded
            assert _patch_rows(engine, fresh.id) == [("send-sms-too", True)]
            clock.advance(timedelta(days=30, seconds=1))
            # each run resumes on its own version: the old run on its old branch
            assert await engine.result(old.id, timeout=10) == ["welcomed"]
            assert await engine.result(fresh.id, timeout=10) == ["sms sent", "welcomed"]
            assert _patch_rows(engine, old.id) == [("send-sms-too", False)]
            # the fresh run's replay after its sleep returned the recorded answer: once
            assert _patch_rows(engine, fresh.id) == [("send-sms-too", True)]
            assert (await engine.get_run(old.id)).version == "1"
            assert [r.id for r in await engine.on_old_branch("send-sms-too")] == [old.id]
        assert "sms user-old@x" not in SENT
        assert SENT.count("account old@x") == 1  # nothing repeated on the resume

    asyncio.run(scenario())


def test_the_patch_answer_survives_a_replay_after_later_steps_are_recorded(
    make_engine: Make, clock: ManualClock
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[onboard_v1_patched], poll_interval=0.02) as engine:
            run = await engine.start_workflow(onboard_v1_patched, {"email": "a@x"})
            await until(lambda: _status(engine, run.id) == "waiting", "the sleep")
            rows = engine.engine.history(run.id)
            kinds = [r.kind for r in rows]
            # the marker precedes the rows written after the patch point
            assert kinds.index("patch") < [r.key for r in rows].index("send-sms")
        async with make_engine(workflows=[onboard_v1_patched], poll_interval=0.02) as engine:
            clock.advance(timedelta(days=31))
            assert await engine.result(run.id, timeout=10) == ["sms sent", "welcomed"]
        assert SENT.count("sms user-a@x") == 1

    asyncio.run(scenario())


def test_deprecate_patch_replays_patched_runs_and_names_the_patch_for_old_ones(
    make_engine: Make, clock: ManualClock
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[onboard_v1], poll_interval=0.02) as engine:
            old = await engine.start_workflow(onboard_v1, {"email": "old@x"})
            await until(lambda: _status(engine, old.id) == "waiting", "old's sleep")
        async with make_engine(workflows=[onboard_v1_patched], poll_interval=0.02) as engine:
            new = await engine.start_workflow(onboard_v1_patched, {"email": "new@x"})
            await until(lambda: _status(engine, new.id) == "waiting", "new's sleep")
            old_history = await engine.export_history(old.id)
            new_history = await engine.export_history(new.id)
        # the check before the deploy: the patched run replays, the old one is named
        ok = await durable.testing.replay_async(onboard_v1_deprecated, new_history)
        assert ok.ok
        assert ok.reached == "frontier"
        bad = await durable.testing.replay_async(onboard_v1_deprecated, old_history)
        assert bad.divergence is not None
        assert bad.divergence.recorded == "patch send-sms-too (old branch)"
        assert "deprecate_patch('send-sms-too')" in bad.divergence.message
        async with make_engine(workflows=[onboard_v1_deprecated], poll_interval=0.02) as engine:
            clock.advance(timedelta(days=31))
            assert await engine.result(new.id, timeout=10) == ["sms sent", "welcomed"]
            with pytest.raises(durable.WorkflowFailed, match="send-sms-too"):
                await engine.result(old.id, timeout=10)
            error = (await engine.get_run(old.id)).error
            assert error is not None
            assert error.type == "NonDeterminismError"
        assert "welcome user-old@x" not in SENT  # the old run executed nothing more

    asyncio.run(scenario())


def test_runs_of_a_version_served_nowhere_are_reported_and_warned_about_once(
    make_engine: Make, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[onboard_v1], poll_interval=0.02) as engine:
            old = await engine.start_workflow(onboard_v1, {"email": "old@x"})
            await until(lambda: _status(engine, old.id) == "waiting", "the sleep")
            assert await engine.unserved_runs() == []
        caplog.set_level(logging.WARNING, logger="durable")
        async with make_engine(workflows=[onboard_v2], poll_interval=0.02) as engine:
            clock.advance(timedelta(days=31))  # due, but no code here has version 1

            def warned() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "unfinished run(s)" in r.getMessage()]

            await until(lambda: bool(warned()), "the warning")
            assert [r.id for r in await engine.unserved_runs()] == [old.id]
            assert await engine.executor.warn_unserved() == {("onboard", "1"): 1}
            message = warned()[0].getMessage()
            assert "'onboard'" in message
            assert "version '1'" in message
            assert len(warned()) == 1  # once, however often the scheduler looks
            assert _status(engine, old.id) == "waiting"  # left alone, not failed
            unserved = await engine.client.unserved_runs([onboard_v2])
            assert [(r.id, r.version) for r in unserved] == [(old.id, "1")]
            assert await engine.client.unserved_runs([onboard_v1, onboard_v2]) == []

    asyncio.run(scenario())


def test_unserved_by_default_means_served_by_no_live_worker(
    make_engine: Make, clock: ManualClock
) -> None:
    async def scenario() -> None:
        async with make_engine(workflows=[onboard_v1], poll_interval=0.02) as engine:
            old = await engine.start_workflow(onboard_v1, {"email": "w@x"})
            await until(lambda: _status(engine, old.id) == "waiting", "the sleep")
        shared = engine.engine
        client = durable.Client(shared)
        # no worker alive: nothing running can resume the run
        assert [r.id for r in await client.unserved_runs()] == [old.id]

        async def with_worker(*workflows: durable.Workflow[Any, Any]) -> list[str]:
            worker = durable.Worker(
                shared, workflows=list(workflows), poll_interval=0.05, shutdown_timeout=5.0
            )
            task = asyncio.create_task(worker.run(install_signal_handlers=False))
            try:
                await until(lambda: bool(durable.worker.live_workers(shared)), "registered")
                (row,) = durable.worker.live_workers(shared)
                assert sorted(map(tuple, row["workflows"])) == sorted(
                    (w.name, w.version) for w in workflows
                )
                return [r.id for r in await client.unserved_runs()]
            finally:
                worker.request_stop()
                await task

        assert await with_worker(onboard_v2) == [old.id]       # a worker, but not for v1
        assert await with_worker(onboard_v1, onboard_v2) == []  # v1 is served
        assert [r.id for r in await client.unserved_runs()] == [old.id]  # stopped again
        await client.close()

    asyncio.run(scenario())
