"""Workers restarted under a fixed id, and steps that raise ``BaseException``.

* A worker with a fixed ``worker_id`` (``pod-0``) restarted after SIGKILL or SIGTERM
  takes its name back, and fences its previous incarnation: a stalled old ``pod-0``
  resumed later writes nothing.
* A step raising ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException``
  is counted as a crash whoever claims the run next (the same worker included), and
  the run is dead-lettered after ``crash_limit`` attempts.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import worker_proc

from tests.workers.conftest import PgTarget, WorkerPool, wait_until
from tests.workers.test_worker_crash import start_runs, step_rows, wait_finished

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(90)]

LEASE = 1.5


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_worker_with_a_fixed_id_restarts_and_takes_its_name_back(
    pg: PgTarget, workers: WorkerPool, stop: int
) -> None:
    first = workers.spawn("pod-0", worker_id="pod-0", lease=LEASE)
    run_ids = start_runs(pg, worker_proc.steps, [{"steps": 6, "pause": 0.05}] * 6)
    wait_until(lambda: len(pg.ledger()) >= 6, timeout=30, what="some steps to run")
    first.signal(stop)
    first.proc.wait(15)

    second = workers.spawn("pod-0-again", worker_id="pod-0", lease=LEASE)
    runs = wait_finished(pg, run_ids, timeout=60)
    assert {runs[r]["status"] for r in run_ids} == {"completed"}
    assert second.alive(), second.output()[-2000:]
    assert "ConcurrencyConflict" not in second.output()
    row = pg.worker_rows()["pod-0"]
    assert row["pid"] == second.pid
    assert row["stopped_at"] is None
    for rid in run_ids:
        steps = step_rows(pg.log(rid))
        assert [r["key"] for r in steps] == [f"s{i}" for i in range(6)], rid
    tx_effects = Counter((r, k) for r, k, _, kind in pg.ledger() if kind == "tx")
    assert set(tx_effects.values()) == {1}


def test_a_restarted_worker_fences_its_stalled_previous_incarnation(
    pg: PgTarget, workers: WorkerPool
) -> None:
    old = workers.spawn("old", worker_id="pod-0", lease=30.0)  # a long lease: no expiry
    run_ids = start_runs(pg, worker_proc.steps, [{"steps": 8, "pause": 0.1}] * 4)
    wait_until(
        lambda: any(pid == old.pid for _, _, pid, _ in pg.ledger()),
        timeout=30,
        what="the old incarnation to run steps",
    )
    old.signal(signal.SIGSTOP)
    new = workers.spawn("new", worker_id="pod-0", lease=30.0)
    # the new incarnation does not wait 30 s for its own old leases to run out
    runs = wait_finished(pg, run_ids, timeout=40)
    assert {runs[r]["status"] for r in run_ids} == {"completed"}
    before = pg.log()
    old.signal(signal.SIGCONT)
    wait_until(
        lambda: "lost its lease" in old.output() or not old.alive(),
        timeout=20,
        what="the old incarnation to notice it was fenced",
    )
    old.kill()
    assert pg.log() == before, "the fenced incarnation wrote to the log"
    assert new.alive()
    for rid in run_ids:
        assert [r["key"] for r in step_rows(pg.log(rid))] == [f"s{i}" for i in range(8)]
    tx_effects = Counter((r, k) for r, k, _, kind in pg.ledger() if kind == "tx")
    assert set(tx_effects.values()) == {1}


@pytest.mark.parametrize("kind", ["exit", "interrupt", "custom"])
def test_a_step_raising_base_exception_is_dead_lettered(
    pg: PgTarget, workers: WorkerPool, kind: str
) -> None:
    crash_limit = 2
    (run_id,) = start_runs(pg, worker_proc.raiser, [{"kind": kind}])
    procs = []
    # one worker at a time, restarted when it goes down (as a supervisor would)
    for attempt in range(crash_limit + 2):
        if pg.runs()[run_id]["status"] == "dead":
            break
        proc = workers.spawn(
            f"w{attempt}", queues="raise", worker_id="pod-0", lease=1.0, crash_limit=crash_limit
        )
        procs.append(proc)

        def gone_or_dead(p: object = proc) -> bool:
            return pg.runs()[run_id]["status"] == "dead" or not procs[-1].alive()

        wait_until(gone_or_dead, timeout=30, what="the worker to die or the run to be dead")
    runs = wait_finished(pg, [run_id], timeout=30)
    assert runs[run_id]["status"] == "dead"
    attempts = [r for r in pg.ledger() if r[0] == run_id and r[1] == "raise"]
    assert len(attempts) == crash_limit
    log = pg.log(run_id)
    dead = [r for r in log if r["kind"] == "dead_letter"]
    assert len(dead) == 1
    assert dead[0]["meta"]["crashes"] == crash_limit
