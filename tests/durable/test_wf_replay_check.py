"""Replaying recorded histories against changed code, executing nothing: the property
over random histories, ``durable.testing.replay`` on exported files, and the CLI's
``runs check`` (exit codes), ``runs export``, ``runs list --patch`` and ``--unserved``."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wf_flows import CALLS, Make, Ops, generated, until

import durable
from durable.log.replay import History
from statewf import cli
from statewf.errors import InvalidInput
from statewf.testing import ManualClock

V1 = generated()


async def record(
    make_engine: Make, clock: ManualClock, ops: Ops, wakes: int, workflow: Any = V1
) -> durable.testing.RunHistory:
    """Run ``ops`` on ``workflow`` until it completes or has slept through ``wakes`` sleeps."""
    async with make_engine(workflows=[workflow], poll_interval=0.02) as engine:
        run = await engine.start_workflow(workflow, {"ops": ops})

        def settled(after: int) -> bool:
            snap = engine.engine.get(run.id)
            return snap.version > after and snap.status in ("waiting", "completed")

        await until(lambda: settled(1), "the run's first stop")
        for _ in range(wakes):
            snap = engine.engine.get(run.id)
            if snap.status != "waiting":
                break
            clock.advance(timedelta(seconds=3601))
            await until(lambda v=snap.version: settled(v), "the run's next stop")
        return await engine.export_history(run.id)


ops_lists = st.lists(st.sampled_from(["run", "sleep"]), min_size=1, max_size=6).map(
    lambda kinds: [(kind, f"s{i}") for i, kind in enumerate(kinds)]
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=ops_lists, wakes=st.integers(0, 3), data=st.data())
def test_replay_under_patches_never_diverges_and_a_removed_or_moved_step_does(
    make_engine: Make, clock: ManualClock, ops: Ops, wakes: int, data: st.DataObject
) -> None:
    history = asyncio.run(record(make_engine, clock, ops, wakes))
    CALLS.clear()
    calls = History.from_log(history.rows).calls
    last = max(calls)  # the furthest position the run has reached (a step or a sleep)

    assert durable.testing.replay(V1, history).ok
    for at in range(len(ops) + 1):
        result = durable.testing.replay(generated(patch_at=at), history)
        assert result.ok, result.divergence
        if at <= last:  # the run passed this point before the patch: the old branch
            assert result.patches == {"extra": False}
        elif "extra" in result.patches:  # the run had not reached it: the new branch
            assert result.patches == {"extra": True}

    removed = data.draw(st.integers(0, last), label="removed position")
    result = durable.testing.replay(
        generated(edit=lambda o: [*o[:removed], *o[removed + 1 :]]), history
    )
    assert result.divergence is not None
    assert result.divergence.position == removed
    assert result.divergence.recorded == f"step {ops[removed][1]!r} ({ops[removed][0]})"
    if removed + 1 < len(ops):
        kind, key = ops[removed + 1]
        assert result.divergence.requested == f"step {key!r} ({kind})"

    if len(ops) >= 2:
        first = data.draw(st.integers(0, min(last, len(ops) - 2)), label="swapped position")
        swapped = generated(edit=lambda o: [*o[:first], o[first + 1], o[first], *o[first + 2 :]])
        result = durable.testing.replay(swapped, history)
        assert result.divergence is not None
        assert result.divergence.position == first
        assert f"step {ops[first][1]!r}" in (result.divergence.recorded or "")
    assert CALLS == {}  # reported, never executed


def test_an_exported_history_file_replays_in_a_unit_test(
    make_engine: Make, clock: ManualClock, tmp_path: Path
) -> None:
    ops = [("run", "s0"), ("sleep", "s1"), ("run", "s2")]
    history = asyncio.run(record(make_engine, clock, ops, 0))
    path = tmp_path / "run.json"
    path.write_text(history.to_json())
    loaded = durable.testing.load_history(path)
    assert loaded == history
    result = durable.testing.replay(V1, path)
    assert (result.ok, result.reached, result.steps) == (True, "frontier", 2)
    moved = generated(edit=lambda o: [o[1], o[0], *o[2:]])
    diverged = durable.testing.replay(moved, loaded)
    assert diverged.divergence is not None
    assert history.run_id in diverged.divergence.message
    with pytest.raises(durable.NonDeterminismError, match="position 0"):
        diverged.raise_if_diverged()
    path.write_text('{"format": "something else"}')
    with pytest.raises(InvalidInput, match="statewf runs export"):
        durable.testing.load_history(path)
    other = durable.workflow("other")(V1.fn)
    with pytest.raises(InvalidInput, match="not 'other'"):
        durable.testing.replay(other, history)


# ------------------------------------------------------------ the CLI

APP = """
from wf_flows import generated
gen = generated({args})
"""


def app(tmp_path: Path, name: str, args: str = "") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(APP.format(args=args))
    return str(path)


def run_cli(db: dict[str, str | None], *args: str) -> Result:
    cli._load_plugins()
    base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])
    return CliRunner().invoke(cli.cli, [*base, *args], catch_exceptions=False)


def test_runs_check_export_and_list_patch_on_stored_runs(
    make_engine: Make, clock: ManualClock, db: dict[str, str | None], tmp_path: Path
) -> None:
    ops = [("run", "s0"), ("sleep", "s1"), ("run", "s2")]
    history = asyncio.run(record(make_engine, clock, ops, 0))
    run_id = history.run_id
    same = app(tmp_path, "app_same")
    moved = app(tmp_path, "app_moved", "edit=lambda o: [o[1], o[0], *o[2:]]")
    patched = app(tmp_path, "app_patched", "patch_at=1")
    newer = app(tmp_path, "app_newer", "version='2'")

    ok = run_cli(db, "runs", "check", "--app", same, "--workflow", "gen")
    assert ok.exit_code == 0, ok.output
    assert "checked 1 run(s): all replay" in ok.output

    bad = run_cli(db, "runs", "check", "--app", moved, "--workflow", "gen")
    assert bad.exit_code == 1, bad.output
    assert f"run {run_id} (gen version 1) diverged at step position 0" in bad.output
    assert "the log recorded step 's0' (run), the code asks for step 's1' (sleep)" in bad.output

    assert run_cli(db, "--app", moved, "runs", "check").exit_code == 1  # statewf's own --app
    nothing = run_cli(db, "runs", "check")
    assert nothing.exit_code == 2
    assert "statewf runs check --app MODULE" in nothing.output

    later = run_cli(db, "runs", "check", "--app", moved, "--since", "2999-01-01T00:00:00+00:00")
    assert later.exit_code == 0, later.output
    assert "checked 0 run(s)" in later.output
    earlier = run_cli(db, "runs", "check", "--app", moved, "--since", "2000-01-01T00:00:00+00:00")
    assert earlier.exit_code == 1

    old = run_cli(db, "runs", "check", "--app", patched, "--status", "waiting")
    assert old.exit_code == 0, old.output
    assert "patch 'extra': 1 run(s) take the old branch" in old.output
    assert run_cli(db, "runs", "check", "--app", same, "--status", "completed").exit_code == 0

    unserved = run_cli(db, "runs", "check", "--app", newer)
    assert unserved.exit_code == 1
    assert "no code for version '1' of 'gen'" in unserved.output

    exported = run_cli(db, "runs", "export", run_id)
    assert exported.exit_code == 0
    file = tmp_path / "run.json"
    file.write_text(exported.output)
    assert json.loads(exported.output)["run_id"] == run_id
    assert durable.testing.load_history(file) == history
    from_file = run_cli(db, "runs", "check", "--app", moved, "--history", str(file))
    assert from_file.exit_code == 1
    assert "position 0" in from_file.output
    assert run_cli(db, "runs", "check", "--app", same, "--history", str(file)).exit_code == 0
    missing = run_cli(db, "runs", "export", "no-such-run")
    assert missing.exit_code == 1
    assert "no-such-run" in missing.output

    # nothing above wrote: the stored log is as it was
    assert run_cli(db, "runs", "list", "--patch", "extra").output.strip() == "no runs"

    code = generated(patch_at=1)

    async def resume_on_patched_code() -> str:
        async with make_engine(workflows=[code], poll_interval=0.02) as engine:
            clock.advance(timedelta(seconds=3601))
            assert await engine.result(run_id, timeout=10) == ["s0", "s2"]
            fresh = await engine.start_workflow(code, {"ops": ops})
            await until(lambda: engine.engine.get(fresh.id).status == "waiting", "fresh")
            return fresh.id

    fresh_id = asyncio.run(resume_on_patched_code())
    listed = run_cli(db, "runs", "list", "--patch", "extra")
    assert run_id in listed.output
    assert "old branch of 'extra'" in listed.output
    assert fresh_id not in listed.output  # it took the new branch
    waiting = run_cli(db, "runs", "list", "--patch", "extra", "--status", "waiting")
    assert waiting.output.strip() == "no runs"
    assert "--patch" in run_cli(db, "runs", "list", "--help").output

    gone = run_cli(db, "runs", "list", "--unserved", "--app", newer)
    assert fresh_id in gone.output
    assert "UNSERVED" in gone.output
    assert run_id not in gone.output  # completed: nothing left to serve
    assert run_cli(db, "runs", "list", "--unserved", "--app", patched).output.strip() == "no runs"
    shown = run_cli(db, "runs", "show", fresh_id, "--app", newer)
    assert "UNSERVED" in shown.output
    assert "UNSERVED" not in run_cli(db, "runs", "show", fresh_id, "--app", patched).output
    no_worker = run_cli(db, "runs", "list", "--unserved")  # served by live workers: none
    assert no_worker.exit_code == 0
    assert fresh_id in no_worker.output
    assert run_id not in no_worker.output
