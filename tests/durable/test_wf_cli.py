"""``statewf runs list|show|cancel`` and ``statewf history`` on workflow runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from wf_flows import ORDER, Make, pipeline5

import durable
import statewf
from statewf import cli


def invoke(db: dict[str, str | None], *args: str) -> str:
    cli._load_plugins()
    base = ["--database", str(db["url"])]
    if db["schema"]:
        base += ["--schema", db["schema"]]
    result = CliRunner().invoke(cli.cli, [*base, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def history(db: dict[str, str | None], run_id: str) -> str:
    """``statewf history`` in a subprocess (the core command leaves its pool open)."""
    base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])
    done = subprocess.run(
        [sys.executable, "-m", "statewf.cli", *base, "history", run_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_runs_list_show_cancel_and_history(make_engine: Make, db: dict[str, str | None]) -> None:
    release = threading.Event()

    @durable.workflow("blocked")
    async def blocked(ctx: durable.Context[None]) -> None:
        await ctx.step.run("wait", lambda: release.wait(10))

    async def main() -> tuple[str, str]:
        async with make_engine(workflows=[pipeline5, blocked]) as engine:
            done = await engine.start_workflow("pipeline-5", ORDER, resource_id="acme")
            await engine.wait_for_run(done.id)
            stuck = await engine.start_workflow("blocked")
            listed = await asyncio.to_thread(invoke, db, "runs", "list")
            assert done.id in listed
            assert stuck.id in listed
            assert "completed" in listed
            only = await asyncio.to_thread(
                invoke, db, "runs", "list", "--status", "completed", "--resource", "acme"
            )
            assert stuck.id not in only
            cancelled = await asyncio.to_thread(
                invoke, db, "runs", "cancel", stuck.id, "--reason", "test"
            )
            assert "cancelled" in cancelled
            release.set()
            await engine.wait_for_run(stuck.id)
            return done.id, stuck.id

    done_id, stuck_id = asyncio.run(main())
    shown = invoke(db, "runs", "show", done_id)
    assert "status    completed   steps 8/8" in shown
    assert "charge" in shown
    assert "pack-b" in shown
    log = history(db, done_id)
    assert "create" in log
    assert "pack-b" in log
    assert "completed" in log
    as_json = invoke(db, "runs", "show", stuck_id, "--json")
    assert '"status": "cancelled"' in as_json
    assert '"timeline": []' in as_json  # its only step was cut short by the cancel


def test_runs_cli_errors_are_one_line_messages(db: dict[str, str | None]) -> None:
    cli._load_plugins()
    base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])
    result = CliRunner().invoke(cli.cli, [*base, "runs", "show", "nope"])
    assert result.exit_code == 1
    assert "RunNotFound: no workflow run 'nope'" in result.output


def test_waiting_commands(make_engine: Make, db: dict[str, str | None]) -> None:
    from durable.cli import runs as durable_cli

    @durable.workflow("cli-waits")
    async def cli_waits(ctx: durable.Context[None]) -> list[Any]:
        got = await ctx.step.wait_for("order", event="paid")
        decision = await ctx.step.approval("ship")
        await ctx.step.pause("hold")
        return [got, decision.approved, decision.reviewer]

    def run_cli(command: Any, *args: str) -> str:
        base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])
        group = cli.cli
        group.add_command(command)
        result = CliRunner().invoke(group, [*base, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    async def waiting_on(engine: durable.WorkflowEngine, run_id: str, key: str) -> None:
        for _ in range(2000):
            snap = engine.engine.get(run_id)
            if (snap.context.get("waiting") or {}).get("key") == key and snap.status in (
                "waiting",
                "paused",
            ):
                return
            await asyncio.sleep(0.005)
        raise AssertionError(
            f"never waited on {key}: "
            f"{[(r.kind, r.status, r.wake_at) for r in engine.engine.history(run_id)]}"
        )

    async def main() -> None:
        async with make_engine(workflows=[cli_waits], poll_interval=0.05) as engine:
            run = await engine.start_workflow(cli_waits)
            await waiting_on(engine, run.id, "order")
            out = await asyncio.to_thread(
                run_cli, durable_cli.runs, "runs", "trigger", run.id, "paid", "--data", '{"n": 1}'
            )
            assert "recorded event 'paid'" in out
            await waiting_on(engine, run.id, "ship")
            out = await asyncio.to_thread(
                run_cli, durable_cli.approve, "approve", run.id, "--reviewer", "ed"
            )
            assert "approved run" in out
            await waiting_on(engine, run.id, "hold")
            await asyncio.to_thread(run_cli, durable_cli.runs, "runs", "resume", run.id)
            assert await engine.result(run.id, timeout=10) == [{"n": 1}, True, "ed"]

            second = await engine.start_workflow(cli_waits)
            await waiting_on(engine, second.id, "order")
            await asyncio.to_thread(run_cli, durable_cli.runs, "runs", "pause", second.id)
            assert engine.engine.get(second.id).status == "paused"
            await asyncio.to_thread(run_cli, durable_cli.runs, "runs", "resume", second.id)
            await waiting_on(engine, second.id, "order")  # woken, and waiting again
            await asyncio.to_thread(
                run_cli, durable_cli.runs, "runs", "fast-forward", second.id, "--data", '"x"'
            )
            await waiting_on(engine, second.id, "ship")
            await asyncio.to_thread(
                run_cli,
                durable_cli.reject,
                "reject",
                second.id,
                "--reviewer",
                "legal",
                "--reason",
                "no",
            )
            await waiting_on(engine, second.id, "hold")
            await asyncio.to_thread(run_cli, durable_cli.runs, "runs", "fast-forward", second.id)
            assert await engine.result(second.id, timeout=10) == ["x", False, "legal"]

    asyncio.run(main())


def test_a_bogus_status_filter_is_a_usage_error_naming_the_statuses(
    make_engine: Make, db: dict[str, str | None]
) -> None:
    cli._load_plugins()
    base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])
    result = CliRunner().invoke(cli.cli, [*base, "runs", "list", "--status", "bogus"])
    assert result.exit_code == 2
    assert "'bogus' is not one of" in result.output
    for status in ("pending", "running", "waiting", "paused", "completed", "dead"):
        assert status in result.output
    assert invoke(db, "runs", "list", "--status", "pending") == "no runs\n"

    async def main() -> None:
        async with make_engine(workflows=[pipeline5]) as engine:
            with pytest.raises(statewf.InvalidInput, match="'bogus' is not a run status; use one"):
                await engine.get_runs(status="bogus")
            with pytest.raises(statewf.InvalidInput, match="'done' is not a run status"):
                await engine.get_runs(status=["completed", "done"])

    asyncio.run(main())


@durable.workflow("cli-trigger")
async def cli_trigger(ctx: durable.Context[None]) -> Any:
    return await ctx.step.wait_for("pay", event="paid")


def test_trigger_says_the_event_was_recorded_and_what_the_run_does_with_it(
    make_engine: Make, db: dict[str, str | None]
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[cli_trigger], poll_interval=0.05) as engine:
            run = await engine.start_workflow(cli_trigger)
            for _ in range(2000):
                if engine.engine.get(run.id).status == "waiting":
                    break
                await asyncio.sleep(0.005)
            other = await asyncio.to_thread(invoke, db, "runs", "trigger", run.id, "shipped")
            assert other == (
                f"recorded event 'shipped' for run {run.id}; the run (waiting) is not waiting "
                "for it now: the event is kept for its next wait for 'shipped'\n"
            )
            await engine.pause_workflow(run.id)
            held = await asyncio.to_thread(invoke, db, "runs", "trigger", run.id, "paid")
            assert held == (
                f"recorded event 'paid' for run {run.id}; the run is paused: once resumed "
                f"(statewf runs resume {run.id}) its next wait for 'paid' takes it\n"
            )
            await engine.resume_workflow(run.id)
            assert await engine.result(run.id, timeout=10) is None  # the kept 'paid' event

            second = await engine.start_workflow(cli_trigger)
            for _ in range(2000):
                if engine.engine.get(second.id).status == "waiting":
                    break
                await asyncio.sleep(0.005)
            out = await asyncio.to_thread(
                invoke, db, "runs", "trigger", second.id, "paid", "--data", '{"n": 2}'
            )
            assert out == (
                f"recorded event 'paid' for run {second.id}; the run was waiting for it at "
                "step 'pay' and is now due: a worker of its workflow takes it up\n"
            )
            assert await engine.result(second.id, timeout=10) == {"n": 2}

    asyncio.run(main())
