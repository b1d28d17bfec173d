"""Load: 4 worker processes x 500 short runs with per-resource limits (PostgreSQL, bounded).

None lost (every run completes), none executed twice (each step once in each log and
once in the side-effect ledger), and no resource ever above its limit (from the log's
times).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flow_app
import pytest
import sqlalchemy as sa
from flow_app import intervals, max_overlap, work_intervals

import durable
import statewf
from tests.conftest import PG_URL, require_postgres

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

WORKERS = 4
RUNS = 500
RESOURCES = 6  # 12 runs at once at most: the limit binds with 24 worker slots
PER_RESOURCE = 2
CONCURRENCY = 6  # and 4 db threads each: 4 processes use about 25 connections

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def schema() -> Iterator[str]:
    require_postgres()
    name = f"t_{uuid.uuid4().hex[:12]}"
    statewf.Engine(PG_URL, schema=name).close()  # the tables, before the workers start
    yield name
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


WORKER_SCRIPT = """
import asyncio, sys
import durable, statewf, flow_app
url, schema = sys.argv[1], sys.argv[2]
concurrency, per_resource = int(sys.argv[3]), int(sys.argv[4])
engine = statewf.Engine(url, schema=schema, pool_size=2)
worker = durable.Worker(
    engine, workflows=[flow_app.three_impl], queues=["q"], concurrency=concurrency,
    resource_concurrency=per_resource, poll_interval=1.0, db_threads=4,
)
asyncio.run(worker.run())  # SIGTERM: a graceful stop
engine.close()
"""


def spawn(schema: str, ledger: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """A worker process (the CLI's is tested in test_worker_cli; this one keeps to a few
    database connections: the server's 100 are shared with other tests)."""
    args = [
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        PG_URL,
        schema,
        str(CONCURRENCY),
        str(PER_RESOURCE),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        "FLOW_LEDGER": str(ledger),
    }
    with log_path.open("wb") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_four_workers_500_runs_none_lost_none_twice_resource_limit_kept(
    schema: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    procs = [spawn(schema, ledger, tmp_path / f"w{i}.log") for i in range(WORKERS)]
    engine = statewf.Engine(PG_URL, schema=schema)
    try:

        def registered() -> int:
            return flow_app.count_rows(engine, "workers", stopped_at=None)

        while registered() < WORKERS:
            for i, p in enumerate(procs):
                assert p.poll() is None, (tmp_path / f"w{i}.log").read_text()
            assert time.monotonic() - began < 20, "workers did not register"
            time.sleep(0.1)

        async def start_all() -> list[str]:
            async with durable.Client(engine, db_threads=8) as client:
                sem = asyncio.Semaphore(8)

                async def one(i: int) -> str:
                    async with sem:
                        run = await client.start_workflow(
                            flow_app.three,
                            {"sleep": 0.01, "tag": str(i)},
                            resource_id=f"r{i % RESOURCES}",
                        )
                        return run.id

                return list(await asyncio.gather(*(one(i) for i in range(RUNS))))

        run_ids = asyncio.run(start_all())
        assert len(set(run_ids)) == RUNS

        deadline = time.monotonic() + 40
        while flow_app.count_rows(engine, "instances", status="completed") < RUNS:
            for i, p in enumerate(procs):
                assert p.poll() is None, (tmp_path / f"w{i}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"only {flow_app.count_rows(engine, 'instances', status='completed')} of "
                f"{RUNS} runs completed in time"
            )
            time.sleep(0.2)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for i, p in enumerate(procs):
            assert p.wait(20) == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]

        with engine.store.transaction(readonly=True) as tx:
            t, c = tx.t.transitions, tx.t.transitions.c
            rows = list(
                tx.conn.execute(
                    sa.select(c.instance_id, c.seq, c.kind, c.key, c.meta, c.created_at)
                    .select_from(t)
                    .order_by(c.instance_id, c.seq)
                )
            )
            i = tx.t.instances.c
            runs = {
                r.id: r
                for r in tx.conn.execute(sa.select(i.id, i.status, i.resource_id, i.lease_owner))
            }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        engine.close()

    # none lost
    assert set(runs) == set(run_ids)
    assert Counter(r.status for r in runs.values()) == {"completed": RUNS}
    assert all(r.lease_owner is None for r in runs.values())  # every lease handed back

    # none executed twice: each step once in each log, once in the ledger
    logs: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        logs[row.instance_id].append(row)
    workers_used = set()
    for run_id in run_ids:
        log = logs[run_id]
        kinds = [r.kind for r in log]
        assert kinds.count("claim") == 1, (run_id, kinds)
        assert "recover" not in kinds, (run_id, kinds)
        assert kinds[0] == "create", (run_id, kinds)
        assert kinds[-1] == "completed", (run_id, kinds)
        steps = [r.key for r in log if r.kind == "step"]
        assert sorted(steps) == ["one", "three", "two"], (run_id, steps)
        workers_used.add(next(r.meta["worker"] for r in log if r.kind == "claim"))
    effects: Counter[tuple[str, str]] = Counter()
    for path in ledger.iterdir():
        for line in path.read_text().splitlines():
            run_id, key = line.split()
            effects[(run_id, key)] += 1
    assert effects == {(r, k): 1 for r in run_ids for k in ("one", "two", "three")}
    assert len(workers_used) == WORKERS  # the load was shared by all four

    # the per-resource limit, from the log's times: each run's first step start to its
    # final row (inside the time it was held, whatever the claim row's stamp)
    work: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    claimed: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for run_id in run_ids:
        found = intervals(logs[run_id])
        assert len(found) == 1
        steps = work_intervals(logs[run_id])
        assert found[0][0] <= steps[0][0]  # claimed before its first step started
        claimed[runs[run_id].resource_id].extend(found)
        work[runs[run_id].resource_id].extend(steps)
    worst = {res: max_overlap(s) for res, s in work.items()}
    assert len(worst) == RESOURCES
    assert max(worst.values()) <= PER_RESOURCE, worst
    assert PER_RESOURCE in worst.values()  # the limit was reached, so it was tested

    # claim row to final row: the span the log shows for each execution
    by_claims = {res: max_overlap(s) for res, s in claimed.items()}
    assert max(by_claims.values()) <= PER_RESOURCE, by_claims
