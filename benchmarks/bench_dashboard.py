"""Server time of the dashboard's pages with 100,000 instances and 100,000 runs on PostgreSQL.

Run: ``python benchmarks/bench_dashboard.py [--url URL] [--instances 100000] [--runs 100000]``.

Rows are bulk-inserted into a fresh schema (instances and runs of 100 tenants, in
every status, a tenth of the runs waiting, half of those for an approval), plus one
real run of 1,000 steps executed by a WorkflowEngine. Each page is requested
through Starlette's TestClient (in process, so the time is the server's plus a
fraction of a millisecond) a few times after a warm-up; the median and the worst
are printed against the targets: lists under 100 ms, the 1,000-step run under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.testclient import TestClient

import durable
import statewf
from statewf import browse
from visualize.dashboard import User, create_app

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TENANTS = [f"tenant-{n:03d}" for n in range(100)]
RUN_STATUSES = ["completed"] * 70 + ["failed"] * 5 + ["waiting"] * 10 + ["running"] * 10
RUN_STATUSES += ["dead"] * 5
MACHINE = statewf.Machine(
    "bench-order",
    initial="new",
    states={
        "new": statewf.State(on={"PAY": "paid"}),
        "paid": statewf.State(on={"SHIP": "shipped"}),
        "shipped": statewf.State(final=True),
    },
)


def _step(n: int) -> int:
    return n + 1


@durable.workflow("bench-long")
async def long_run(ctx: durable.Context[None]) -> int:
    """A run of 1,000 steps."""
    total = 0
    for i in range(1000):
        total = await ctx.step.run(f"step-{i}", _step, total)
    return total


def bulk_rows(n: int, kind: str, rng: random.Random) -> list[dict[str, Any]]:
    """Instance rows spread over a year, across tenants, names and statuses."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        created = start + timedelta(seconds=i * 300 + rng.random())
        if kind == "machine":
            status = "final" if rng.random() < 0.3 else "active"
            state = "shipped" if status == "final" else rng.choice(["new", "paid"])
            name, context = "bench-order", {"n": i}
        else:
            status = rng.choice(RUN_STATUSES)
            state, name = "step", f"bench-flow-{i % 10}"
            context: dict[str, Any] = {"input": {"n": i}}
            if status == "waiting":
                event = "approval:review" if i % 2 else "shipment-arrived"
                context["waiting"] = {"kind": "wait", "key": "review", "event": event}
            if status in ("failed", "dead"):
                context["error"] = {"type": "ValueError", "message": f"row {i}"}
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "machine": name,
                "machine_version": "1",
                "kind": kind,
                "state": state,
                "configuration": [state],
                "context": context,
                "status": status,
                "version": 3,
                "resource_id": TENANTS[i % len(TENANTS)],
                "queue": "default" if i % 4 else "billing",
                "priority": 0,
                "labels": None,
                "lease_epoch": 0,
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


def seed(engine: statewf.Engine, instances: int, runs: int) -> str:
    """Bulk rows, ANALYZE, and one real 1,000-step run; the run's id."""
    rng = random.Random(7)
    engine.register(MACHINE)
    table = engine.store.tables.instances
    with engine.store.engine.begin() as conn:
        for kind, n in (("machine", instances), ("workflow", runs)):
            rows = bulk_rows(n, kind, rng)
            for at in range(0, len(rows), 5000):
                conn.execute(sa.insert(table), rows[at : at + 5000])
        conn.execute(sa.text(f"ANALYZE {table.schema}.{table.name}"))
    for i in range(3):
        engine.create("bench-order", id=f"real-{i}", resource_id=TENANTS[0])
        engine.send(f"real-{i}", "PAY")

    async def one_long_run() -> str:
        async with durable.WorkflowEngine(engine, workflows=[long_run]) as wf:
            run = await wf.start_workflow(long_run, resource_id=TENANTS[0])
            await wf.result(run.id, timeout=600)
            return run.id

    return asyncio.run(one_long_run())


def measure(client: TestClient, url: str, repeat: int) -> tuple[float, float]:
    """Median and worst milliseconds of ``repeat`` requests of ``url`` (after two warm-ups)."""
    for _ in range(2):
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, url
    return statistics.median(times), max(times)


def main() -> None:
    """Seed, then time every page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    schema = f"bench_dash_{uuid.uuid4().hex[:8]}"
    engine = statewf.Engine(args.url, schema=schema)
    try:
        started = time.perf_counter()
        long_id = seed(engine, args.instances, args.runs)
        print(
            f"seeded {args.instances:,} instances, {args.runs:,} runs and one 1,000-step run "
            f"in {time.perf_counter() - started:.0f} s (schema {schema})"
        )
        for label, scope in (("every tenant", None), ("3 tenants", set(TENANTS[:3]))):
            times = []
            for _ in range(5):
                begun = time.perf_counter()
                browse.status_counts(engine, resource_ids=scope)
                times.append((time.perf_counter() - begun) * 1000)
            print(
                f"overview counts, uncached (once per 5 s), {label}: "
                f"{statistics.median(times):.1f} ms median"
            )
        users = {"admin": User("admin"), "tenant": User("t", frozenset(TENANTS[:3]))}
        cursor_page = None
        for who, user in users.items():
            app = create_app(engine, auth=lambda _c, u=user: u)
            with TestClient(app) as client:
                if cursor_page is None:
                    first = client.get("/runs").text
                    cursor_page = first.split('name="cursor" value="', 1)[1].split('"', 1)[0]
                pages = [
                    ("/", 100),
                    ("/instances", 100),
                    ("/instances?machine=bench-order&status=final", 100),
                    ("/instances?state=paid", 100),
                    ("/runs", 100),
                    (f"/runs?cursor={quote(cursor_page)}", 100),
                    ("/runs?status=failed", 100),
                    ("/runs?workflow=bench-flow-3&status=waiting", 100),
                    ("/runs?queue=billing", 100),
                    ("/runs?after=2025-06-01T00:00&before=2025-06-02T00:00", 100),
                    ("/tasks", 100),
                    ("/tasks?kind=event", 100),
                    ("/dead-letters", 100),
                    ("/workers", 100),
                    ("/instances/real-0", 200),
                    (f"/runs/{long_id}", 200),
                    (f"/runs/{long_id}/log", 200),
                ]
                print(f"\n{who} ({'every tenant' if user.resource_ids is None else '3 tenants'}):")
                print(f"  {'page':58} {'median':>8} {'worst':>8}  target")
                for url, target in pages:
                    median, worst = measure(client, url, args.repeat)
                    mark = "ok" if median < target else "OVER"
                    print(f"  {url[:58]:58} {median:7.1f}ms {worst:7.1f}ms  <{target} ms {mark}")
    finally:
        engine.close()
        cleanup = sa.create_engine(args.url)
        with cleanup.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        cleanup.dispose()


if __name__ == "__main__":
    main()
