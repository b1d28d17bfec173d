"""Leases on the database's clock: a worker whose clock is off cannot steal live runs.

Worker ``a`` has a true clock; worker ``b``'s wall clock runs 12 s (8 leases) ahead or
behind (``skewed/sitecustomize.py`` moves ``datetime.now`` and ``time.time`` in its
process). Ahead, ``b`` would see every lease of ``a`` as run out; behind, it would grant
leases already over, for ``a`` to take. Neither may happen: no run is taken over while
both workers live, no plain step runs twice, every run completes.
"""

from __future__ import annotations

from collections import Counter

import pytest
import worker_proc

from tests.workers.conftest import PgTarget, WorkerPool, wait_until
from tests.workers.test_worker_crash import start_runs, step_rows, wait_finished

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(90)]

LEASE = 1.5


@pytest.mark.parametrize("skew", [12.0, -12.0])
def test_a_skewed_worker_takes_over_no_live_run(
    pg: PgTarget, workers: WorkerPool, skew: float
) -> None:
    a = workers.spawn("a", concurrency=3, lease=LEASE)
    run_ids = start_runs(pg, worker_proc.steps, [{"steps": 6, "pause": 0.25}] * 6)
    wait_until(
        lambda: any(pid == a.pid for _, _, pid, _ in pg.ledger()),
        timeout=30,
        what="a to execute steps",
    )
    b = workers.spawn("b", concurrency=3, lease=LEASE, skew=skew)
    runs = wait_finished(pg, run_ids, timeout=60)
    assert {runs[r]["status"] for r in run_ids} == {"completed"}
    assert a.alive()
    assert b.alive()
    claims = [r for r in pg.log() if r["kind"] in ("claim", "recover")]
    takeovers = [r for r in claims if r["meta"].get("reason") == "takeover"]
    assert takeovers == [], "a live run was taken over"
    effects = Counter((run, key) for run, key, _, _ in pg.ledger())
    assert set(effects.values()) == {1}, "a step ran twice with no worker dead"
    for rid in run_ids:
        assert [r["key"] for r in step_rows(pg.log(rid))] == [f"s{i}" for i in range(6)]
