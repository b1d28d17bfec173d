"""The benchmark command runs (its figures are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PG_URL, require_postgres

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_command_prints_every_chosen_row() -> None:
    require_postgres()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--url",
            PG_URL,
            "--only",
            "machine,sqlite,growth,lists",
            "--n",
            "20",
            "--long-steps",
            "30",
            "--list-rows",
            "1500",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("measurement ", 1)[1]
    for row in (
        "machine event, PG, 1 sender",
        "machine event recording an outbox effect",
        "SQLite send",
        "30-step run: log load for resume",
        "history() of 32 rows",
        "list(state (newest 1%)) at 1,500 instances",
    ):
        assert row in table, done.stdout
    # counts, not timings: a send is one statement, one commit (the counting follows
    # the prepared write however the store reaches it)
    lines = {line.split("|")[0].strip(): line for line in table.splitlines() if "|" in line}
    assert "1 stmt / 1 commit" in lines["machine event, PG, 1 sender (ping-pong)"]
    effect = "machine event recording an outbox effect (RESTOCKED, effect run inline)"
    assert "1 stmt / 1 commit on the send path" in lines[effect]


def test_peers_section_runs_without_the_peers_installed() -> None:
    require_postgres()
    hide = "import sys; sys.modules.update(dbos=None, absurd_sdk=None, absurdctl=None)"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{hide}; from benchmarks.run import main; main(sys.argv[1:])",
            "--quick",
            "--url",
            PG_URL,
            "--only",
            "peers",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("measurement ", 1)[1]
    for peer in ("vs Absurd", "vs DBOS"):
        row = next(line for line in table.splitlines() if line.startswith(peer))
        assert "not installed (pip install -e '.[bench]')" in row, done.stdout
