"""PostgreSQL restarts under a working worker: it reconnects, finishes every run, repeats nothing.

The test restarts the real server (``pg_ctlcluster ... restart``), which breaks every
other session on it; it runs only under ``CI=true`` or with ``STATEWF_PG_RESTART=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import worker_proc

import durable
from tests.workers.conftest import PgTarget, WorkerPool, run_client, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(150)]

ALLOWED = os.environ.get("CI", "").lower() == "true" or os.environ.get("STATEWF_PG_RESTART") == "1"
CLUSTERS = Path("/etc/postgresql")


def pg_versions() -> list[str]:
    return sorted(p.name for p in CLUSTERS.iterdir()) if CLUSTERS.is_dir() else []


def restart_postgres() -> float:
    """Restart the local cluster and wait until it accepts connections; seconds it took."""
    began = time.monotonic()
    (version,) = pg_versions()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=60,
        capture_output=True,
    )
    wait_until(
        lambda: (
            subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0
        ),
        timeout=30,
        what="PostgreSQL to accept connections again",
        interval=0.1,
    )
    return time.monotonic() - began


@pytest.mark.skipif(
    not ALLOWED,
    reason="restarts the shared PostgreSQL server under every other session: runs only "
    "with CI=true or STATEWF_PG_RESTART=1",
)
@pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None or len(pg_versions()) != 1,
    reason="needs pg_ctlcluster and exactly one cluster version in /etc/postgresql",
)
def test_a_worker_survives_a_postgres_restart(pg: PgTarget, workers: WorkerPool) -> None:
    a = workers.spawn("a", concurrency=4, lease=2.0, poll=0.3)
    n_runs, n_steps = 20, 10

    keys = [uuid.uuid4().hex for _ in range(n_runs)]

    async def start(client: durable.Client) -> list[str]:
        data = {"steps": n_steps, "pause": 0.1}
        return [
            (await client.start_workflow(worker_proc.steps, data, idempotency_key=k)).id
            for k in keys
        ]

    run_ids = run_client(pg, start)
    # restart while runs are under way: some finished, some in progress, some not started
    wait_until(lambda: len(pg.ledger()) >= 40, timeout=30, what="40 steps to run")
    pg.close()  # the test's own connection dies with the server too
    took = restart_postgres()
    restarted_at = time.time()
    assert a.alive(), a.output()[-3000:]
    assert len(pg.ledger()) < n_runs * n_steps, "the runs were over before the restart"

    def finished() -> dict[str, dict[str, Any]] | None:
        runs = pg.runs()
        return runs if all(runs[r]["status"] == "completed" for r in run_ids) else None

    wait_until(finished, timeout=90, what="every run to complete", interval=0.2)
    assert a.alive(), a.output()[-3000:]
    wait_until(
        lambda: not any(v["lease_owner"] for v in pg.runs().values()),
        timeout=10,
        what="the finished runs to be released",
    )

    # Each step recorded once, in order. Each step's effect happened once, except when
    # the server went away between a plain step's effect and its row for longer than the
    # writer retries: that execution gave up without recording the step, and the run
    # was taken up again (a recover row just before the step's row) and ran the step
    # again. A recorded step never ran again; a transactional step ran exactly once.
    effects = Counter((rid, key) for rid, key, _, _ in pg.ledger())
    repeated = []
    for rid in run_ids:
        log = pg.log(rid)
        steps = [r for r in log if r["kind"] == "step"]
        assert [r["key"] for r in steps] == [f"s{i}" for i in range(n_steps)], rid
        assert all(int(r["payload"]["result"]) == a.pid for r in steps)
        for i, row in enumerate(steps):
            count = effects[(rid, row["key"])]
            if count == 1:
                continue
            repeated.append((rid, row["key"], count))
            assert count == 2, (rid, row["key"], count)
            assert not row["meta"].get("transactional"), (rid, row["key"])
            since = steps[i - 1]["seq"] if i else 0
            between = [r["kind"] for r in log if since < r["seq"] < row["seq"]]
            assert "recover" in between, (rid, row["key"], between)
    assert set(effects) == {(rid, f"s{i}") for rid in run_ids for i in range(n_steps)}
    assert len(repeated) <= 4, repeated  # at most the steps under way at the restart

    # the worker reconnected: it heart-beats again after the restart, and is listed live
    wait_until(
        lambda: pg.worker_rows()[a.worker_id]["heartbeat_at"].timestamp() > restarted_at,
        timeout=10,
        what="a heartbeat after the restart",
    )
    assert pg.worker_rows()[a.worker_id]["stopped_at"] is None
    assert took < 60
