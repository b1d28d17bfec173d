"""``statewf worker`` and ``statewf workers`` as a user runs them: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import flow_app
import pytest
from flow_app import count_rows

import durable
import statewf
from tests.conftest import tracked

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP = "tests/workers/flow_app.py"

Db = dict[str, str | None]


def statewf_cmd() -> list[str]:
    found = shutil.which("statewf")
    if found is not None:
        return [found]
    return [sys.executable, "-c", "from statewf.cli import main; main()"]


def db_options(db: Db) -> list[str]:
    return ["--database", str(db["url"]), *(["--schema", db["schema"]] if db["schema"] else [])]


def cli(db: Db, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*statewf_cmd(), *db_options(db), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def listed(db: Db) -> list[dict[str, Any]]:
    out = cli(db, "workers", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert isinstance(rows, list)
    return rows


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_worker_command_executes_runs_is_listed_and_stops_on_sigterm(
    db: Db, tmp_path: Path
) -> None:
    statewf.Engine(db["url"], schema=db["schema"]).close()  # tables exist for `workers`
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                *statewf_cmd(),
                *db_options(db),
                "worker",
                "--app",
                APP,
                "--queue",
                "q",
                "--concurrency",
                "2",
                "--lease",
                "1.5",
                "--poll",
                "0.2",
                "--log-format",
                "text",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def registered() -> list[dict[str, Any]]:
            assert proc.poll() is None, log_path.read_text()
            return [r for r in listed(db) if r["pid"] == proc.pid]

        (row,) = wait_for(registered, 30, "the worker to register")
        assert row["queues"] == ["q"]
        assert row["concurrency"] == 2
        first_beat = datetime.fromisoformat(row["heartbeat_at"])
        assert abs(datetime.now(UTC) - first_beat) < timedelta(seconds=30)
        worker_id = row["id"]

        async def start_and_wait() -> list[Any]:
            async with durable.Client(db["url"], schema=db["schema"]) as client:
                runs = [
                    await client.start_workflow(flow_app.three, {"tag": str(i)}) for i in range(4)
                ]
                gated = await client.start_workflow(flow_app.gated, {})
                done = [await client.wait_for_run(r.id, timeout=30) for r in runs]
                await asyncio.sleep(0.1)
                while (await client.get_run(gated.id)).status != "waiting":
                    await asyncio.sleep(0.05)
                await client.trigger_event(gated.id, "go", "now")
                done.append(await client.wait_for_run(gated.id, timeout=30))
                return [(d, client.engine.history(d.id)) for d in done]

        results = asyncio.run(start_and_wait())
        for run, history in results:
            assert run.status == "completed", run
            assert {r.meta["worker"] for r in history if r.kind in ("claim", "wake")} == {worker_id}
        assert results[-1][0].output == {"got": "now"}

        # the heartbeat moves on (every third of the 1.5 s lease)
        def later_beat() -> bool:
            (now_row,) = [r for r in listed(db) if r["id"] == worker_id]
            return datetime.fromisoformat(now_row["heartbeat_at"]) > first_beat

        wait_for(later_beat, 10, "a later heartbeat")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert [r for r in listed(db) if r["id"] == worker_id] == []
    engine = tracked(statewf.Engine(db["url"], schema=db["schema"]))
    assert count_rows(engine, "workers", id=worker_id) == 1  # kept, marked stopped
    assert count_rows(engine, "workers", id=worker_id, stopped_at=None) == 0
    assert count_rows(engine, "instances", lease_owner=None) == count_rows(engine, "instances")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue", "q=abc"], "write a queue as NAME or NAME=LIMIT"),
        (["--label", "nokv"], "write a label as KEY=VALUE"),
        (["--label", "=v"], "write a label as KEY=VALUE"),
    ],
)
def test_bad_worker_options_are_usage_errors(
    sqlite_url: str, args: list[str], message: str
) -> None:
    out = cli({"url": sqlite_url, "schema": None}, "worker", "--app", APP, *args, timeout=30)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Usage: statewf worker" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_zero_queue_limit_is_refused(sqlite_url: str) -> None:
    out = cli({"url": sqlite_url, "schema": None}, "worker", "--app", APP, "--queue", "q=0")
    assert out.returncode != 0
    assert "concurrency must be at least 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_app_without_workflows_is_a_clear_error(sqlite_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty_app.py"
    empty.write_text("VALUE = 1\n")
    db = {"url": sqlite_url, "schema": None}
    out = cli(db, "worker", "--app", str(empty), timeout=30)
    assert out.returncode == 2
    assert f"no workflows or machines found in {str(empty)!r}" in out.stderr
    missing = cli(db, "worker", "--app", "no_such_module_for_statewf", timeout=30)
    assert missing.returncode != 0
    assert "cannot import app 'no_such_module_for_statewf'" in missing.stderr
    attr = cli(db, "worker", "--app", f"{APP}:nothing_here", timeout=30)
    assert attr.returncode != 0
    assert "has no attribute 'nothing_here'" in attr.stderr
    bare = cli(db, "worker", timeout=30)
    assert bare.returncode == 2
    assert "statewf worker --app module[:obj]" in bare.stderr
    for out in (missing, attr):
        assert "Traceback" not in out.stderr


def test_workers_lists_nobody_on_a_fresh_database(sqlite_url: str) -> None:
    db = {"url": sqlite_url, "schema": None}
    statewf.Engine(sqlite_url).close()
    assert listed(db) == []
    text = cli(db, "workers")
    assert text.returncode == 0
    assert "no worker heart-beat in the last 120s" in text.stdout
