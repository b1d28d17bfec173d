"""A real process killed with SIGKILL mid-step: a new engine resumes its run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import wf_flows

import durable
import statewf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_sigkill_mid_step_then_recovery_on_start(
    make_engine: Callable[..., durable.WorkflowEngine],
    db: dict[str, str | None],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.txt"
    pause = tmp_path / "pause"
    pause.touch()  # step 3 blocks while this file exists
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "wf_kill_child.py"),
            str(db["url"]),
            db["schema"] or "-",
            str(ledger),
            str(pause),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ledger.exists() and ledger.read_text().count("\n") >= 3):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached step 3"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    pause.unlink()

    async def main() -> None:
        async with make_engine(workflows=[wf_flows.ledger]) as probe_engine:
            # the new engine recovered the run on start; it runs to the end
            done = await probe_engine.wait_for_run("killed-run", timeout=30)
            assert done.status == "completed"
            assert done.output == [f"step-{i}" for i in range(1, 6)]
            records = probe_engine.engine.history("killed-run")
            steps = [r.key for r in records if r.kind == "step"]
            assert steps == [f"step-{i}" for i in range(1, 6)]  # each step recorded once
            assert [r.kind for r in records].count("recover") == 1

    asyncio.run(main())
    # steps 1-2 had committed and did not run again; step 3 was killed mid-way and ran
    # again (at-least-once for effects outside the database); 4 and 5 ran once
    assert ledger.read_text().split() == [
        "step-1",
        "step-2",
        "step-3",
        "step-3",
        "step-4",
        "step-5",
    ]


def test_a_sleeping_run_is_woken_by_a_new_process(db: dict[str, str | None]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    subprocess.run(
        [
            sys.executable,
            str(HERE / "wf_kill_child.py"),
            "nap",
            str(db["url"]),
            db["schema"] or "-",
        ],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )

    async def main() -> None:
        store = statewf.Engine(db["url"], schema=db["schema"])  # the wall clock
        try:
            assert store.get("napping-run").status == "waiting"  # the child left it waiting
            async with durable.WorkflowEngine(
                store, workflows=[wf_flows.napper], poll_interval=0.1
            ) as engine:
                assert await engine.result("napping-run", timeout=30) == "rested"
            kinds = [r.kind for r in store.history("napping-run")]
            assert kinds == ["create", "sleep", "wake", "step", "step", "completed"]
        finally:
            store.close()

    asyncio.run(main())
    assert wf_flows.CALLS["after-nap"] == 1
