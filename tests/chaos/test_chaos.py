"""Chaos: workers killed, stalled and skewed while runs with plain and transactional
steps execute; racing senders; a step raising ``BaseException``; a PostgreSQL restart.

Each test asserts from the log and from the application ledger outside statewf:
nothing lost, nothing recorded twice, transactional effects exactly once, plain
effects repeated only for a step in flight in a worker that was killed or stalled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sample_machines as sm
import worker_proc

import statewf
from statewf.fold import fold
from tests.chaos.harness import Chaos, ChaosPlan, ChaosReport, check
from tests.workers.conftest import PgTarget, WorkerPool, wait_until
from tests.workers.test_worker_crash import start_runs, wait_finished
from tests.workers.test_worker_pg_restart import pg_versions, restart_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SENDER = Path(__file__).resolve().parents[1] / "integration" / "concurrent_sender.py"


def assert_clean(report: ChaosReport) -> None:
    figures = report.figures()
    assert report.problems == [], figures
    assert report.lost == 0, figures
    assert report.steps_recorded_twice == 0, figures
    assert report.tx_effects_duplicated == 0, figures
    assert report.plain_repeated_outside_a_kill == 0, figures


@pytest.mark.timeout(90)
def test_sigkill_at_random_points_and_restart_under_the_same_name(
    pg: PgTarget, workers: WorkerPool
) -> None:
    plan = ChaosPlan(workers=3, runs=40, waves=8, steps=10, pause=0.05, kill_every=1.5, duration=12)
    report = Chaos(pg, workers, plan).run()
    assert_clean(report)
    assert report.kills >= 4
    assert report.restarts == report.kills
    assert report.runs_completed == 40
    assert report.takeovers >= 1


@pytest.mark.timeout(90)
def test_a_worker_stalled_past_its_lease_then_resumed_writes_nothing_stale(
    pg: PgTarget, workers: WorkerPool
) -> None:
    plan = ChaosPlan(
        workers=2,
        runs=16,
        waves=4,
        steps=12,
        pause=0.15,
        kill_every=None,
        stop_every=1.0,
        stop_for=2.5,
        duration=10,
    )
    report = Chaos(pg, workers, plan).run()
    assert_clean(report)
    assert report.stops >= 2
    assert report.takeovers >= 1  # the stalled worker's runs were taken over


@pytest.mark.timeout(90)
def test_a_worker_whose_clock_is_several_leases_ahead_steals_nothing(
    pg: PgTarget, workers: WorkerPool
) -> None:
    plan = ChaosPlan(
        workers=2, runs=16, waves=4, steps=6, pause=0.1, kill_every=None, duration=8, skew=12.0
    )
    report = Chaos(pg, workers, plan).run()
    assert_clean(report)
    assert report.takeovers == 0
    assert report.plain_effects_repeated == 0


@pytest.mark.timeout(90)
def test_a_step_raising_base_exception_is_dead_lettered_and_the_fleet_lives(
    pg: PgTarget, workers: WorkerPool
) -> None:
    a = workers.spawn("a", queues="default,raise", lease=1.0, crash_limit=2)
    b = workers.spawn("b", queues="default,raise", lease=1.0, crash_limit=2)
    normal = start_runs(pg, worker_proc.steps, [{"steps": 4}] * 6)
    doomed = start_runs(pg, worker_proc.raiser, [{"kind": "custom"}, {"kind": "interrupt"}])
    runs = wait_finished(pg, normal + doomed, timeout=60)
    assert {runs[r]["status"] for r in normal} == {"completed"}
    assert {runs[r]["status"] for r in doomed} == {"dead"}
    attempts = [r for r in pg.ledger() if r[1] == "raise"]
    assert len(attempts) == 2 * 2  # crash_limit attempts each, then the dead letters
    assert a.alive()
    assert b.alive()


@pytest.mark.timeout(90)
def test_racing_senders_from_threads_and_processes_lose_no_event(pg: PgTarget) -> None:
    engine = statewf.Engine(pg.url, schema=pg.schema)
    engine.register(sm.counter_machine())
    instance = engine.create("counter", context={"n": 0, "moves": 0})
    per_sender, threads_n, procs_n = 60, 4, 2
    procs = [
        subprocess.Popen(
            [sys.executable, str(SENDER), pg.url, pg.schema, instance.id, str(per_sender)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SENDER.parents[1])},
        )
        for _ in range(procs_n)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        errors: list[BaseException] = []

        def sender(k: int) -> None:
            try:
                for i in range(per_sender):
                    engine.send(instance.id, "INC", {"sender": f"thread-{k}", "i": i})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(threads_n)]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outputs = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert errors == []
    total = per_sender * (threads_n + procs_n)
    log = engine.history(instance.id)
    assert [r.seq for r in log] == list(range(1, total + 2))  # create + every send
    assert sum(len(o) for o in outputs) == per_sender * procs_n
    incs = sum(1 for r in log if r.event == "INC")
    assert engine.get(instance.id).context["n"] == incs
    assert fold(log) == engine.get(instance.id)
    engine.close()


ALLOWED = os.environ.get("CI", "").lower() == "true" or os.environ.get("STATEWF_PG_RESTART") == "1"


@pytest.mark.skipif(
    not ALLOWED,
    reason="restarts the shared PostgreSQL server under every other session: runs only "
    "with CI=true or STATEWF_PG_RESTART=1",
)
@pytest.mark.timeout(150)
def test_a_postgres_restart_mid_load(pg: PgTarget, workers: WorkerPool) -> None:
    if len(pg_versions()) != 1:
        pytest.skip("needs exactly one cluster version in /etc/postgresql")
    plan = ChaosPlan(workers=2, runs=20, steps=8, pause=0.05, kill_every=None, duration=0)
    chaos = Chaos(pg, workers, plan)
    for i in range(plan.workers):
        chaos.spawn(f"pod-{i}")
    chaos.start_runs(plan.runs)
    wait_until(lambda: len(pg.ledger()) >= 30, timeout=30, what="30 steps to run")
    pg.close()
    restart_postgres()
    wait_until(lambda: not chaos.unfinished(), timeout=90, what="every run to finish", interval=0.2)
    report = chaos.report
    check(pg, chaos.run_ids, chaos.broken_pids, [], report)
    assert report.lost == 0
    assert report.steps_recorded_twice == 0
    assert report.tx_effects_duplicated == 0
    assert all(w.alive() for w in chaos.fleet.values())
