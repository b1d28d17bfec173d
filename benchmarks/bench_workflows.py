"""Durable workflow benchmark on PostgreSQL: what a step costs, against a raw INSERT commit.

Run: ``python benchmarks/bench_workflows.py`` (``STATEWF_BENCH_PG_URL`` picks the
server; default: the test server). It prints, all measured in the same run:

- a raw single-row INSERT commit (psycopg, autocommit): the floor for one durable write;
- one 10-step run of trivial steps, start to finish (latency), and the marginal cost of
  one step (from 10- and 50-step runs) as a ratio to the raw INSERT commit;
- 200 10-step runs started together (runs/s, steps/s);
- replaying a 1,000-step run: queries issued and engine time;
- the same 10-step workflow on DBOS, if the ``dbos`` package is installed.

Each step is one commit: the log row and the snapshot update in one transaction.
No timing is asserted anywhere; this prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlalchemy as sa

import durable
import statewf
from durable.execution.runner import RunExecutor
from statewf.store.runs import load_run

PG_URL = os.environ.get("STATEWF_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix, for psycopg and DBOS."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def raw_insert_commit(schema: str, n: int) -> float:
    """Median seconds of one single-row INSERT in autocommit mode."""
    with psycopg.connect(libpq_url(PG_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".raw (id bigserial primary key, body jsonb)')
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute(f'INSERT INTO "{schema}".raw (body) VALUES (%s)', [f'{{"i": {i}}}'])
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def replay_only(
    engine: durable.WorkflowEngine,
    workflow: durable.Workflow[Any, Any],
    snapshot: statewf.Instance,
    records: list[statewf.TransitionRecord],
) -> Any:
    """Replay a finished run's log through the executor without writing anything."""
    executor = RunExecutor(
        engine.executor.host, workflow, snapshot.model_copy(update={"status": "running"}), records
    )
    executor.finish()  # replay only: nothing is written
    return await executor.execute()


def make_workflow(name: str, steps: int) -> durable.Workflow[Any, Any]:
    """A workflow of ``steps`` trivial steps (shared by every benchmark)."""

    async def trivial(i: int) -> int:
        return i

    @durable.workflow(name)
    async def wf(ctx: durable.Context[Any]) -> int:
        total = 0
        for i in range(steps):
            total += await ctx.step.run(f"s{i}", trivial, i)
        return total

    return wf


@contextlib.contextmanager
def count_queries(engine: sa.Engine) -> Iterator[list[str]]:
    """Collect the SQL statements ``engine`` sends while the block runs."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


async def bench_statewf(schema: str, raw: float, args: argparse.Namespace) -> dict[str, float]:
    ten = make_workflow("ten", 10)
    fifty = make_workflow("fifty", 50)
    thousand = make_workflow("thousand", 1000)
    store = statewf.Engine(PG_URL, schema=schema, pool_size=20)
    out: dict[str, float] = {}
    async with durable.WorkflowEngine(
        store, workflows=[ten, fifty, thousand], db_threads=16
    ) as engine:

        async def one(wf: str) -> float:
            t0 = time.perf_counter()
            run = await engine.start_workflow(wf)
            await engine.wait_for_run(run.id, poll_interval=0.001)
            return time.perf_counter() - t0

        for _ in range(5):  # warm up pools and caches
            await one("ten")
        lat10 = statistics.median([await one("ten") for _ in range(args.runs)])
        lat50 = statistics.median([await one("fifty") for _ in range(max(5, args.runs // 3))])
        per_step = (lat50 - lat10) / 40
        out.update(latency_10=lat10, latency_50=lat50, per_step=per_step)
        print(f"one 10-step run, start to completed:   {lat10 * 1000:8.2f} ms (median)")
        print(f"one 50-step run:                        {lat50 * 1000:8.2f} ms (median)")
        print(
            f"marginal cost of one step:              {per_step * 1000:8.3f} ms = "
            f"{per_step / raw:.2f} x raw INSERT commit"
        )
        print(
            f"10-step run / 11 commits:               {lat10 / 11 * 1000:8.3f} ms = "
            f"{lat10 / 11 / raw:.2f} x raw INSERT commit (per write, all overheads)"
        )

        t0 = time.perf_counter()
        runs = await asyncio.gather(*[engine.start_workflow("ten") for _ in range(args.many)])
        for run in runs:
            await engine.wait_for_run(run.id, poll_interval=0.001)
        took = time.perf_counter() - t0
        out["many_runs_per_s"] = args.many / took
        print(
            f"{args.many} 10-step runs started together:   {took:8.2f} s  = "
            f"{args.many / took:7.1f} runs/s, {args.many * 10 / took:7.1f} steps/s"
        )

        run = await engine.start_workflow("thousand")
        await engine.wait_for_run(run.id, timeout=300)

        def load() -> tuple[statewf.Instance, list[statewf.TransitionRecord]]:
            with store.store.transaction() as tx:
                loaded = load_run(tx, run.id)
            assert loaded is not None
            return loaded

        times, engine_times, queries = [], [], 0
        for _ in range(5):
            with count_queries(store.store.engine) as seen:
                t0 = time.perf_counter()
                loaded, records = load()
                t1 = time.perf_counter()
                outcome = await replay_only(engine, thousand, loaded, records)
                t2 = time.perf_counter()
            assert outcome.kind == "completed", outcome
            assert outcome.output == sum(range(1000))
            times.append(t2 - t0)
            engine_times.append(t2 - t1)
            queries = len([q for q in seen if "transitions" in q])
        out["replay_1000_total"] = statistics.median(times)
        out["replay_1000_engine"] = statistics.median(engine_times)
        print(
            f"replay of a 1,000-step run:             {out['replay_1000_total'] * 1000:8.1f} ms "
            f"total, {out['replay_1000_engine'] * 1000:.1f} ms engine time, "
            f"{queries} log query"
        )
    out.update(await bench_wakeups(schema))
    store.close()
    return out


async def bench_wakeups(schema: str, rounds: int = 20) -> dict[str, float]:
    """From ``trigger_event`` returning to the next step starting: same engine and another."""
    started: dict[str, float] = {}

    def stamp(run_id: str) -> str:
        started[run_id] = time.perf_counter()
        return run_id

    @durable.workflow("wake")
    async def wake(ctx: durable.Context[Any]) -> str:
        await ctx.step.wait_for("go", event="go")
        return await ctx.step.run("next", stamp, ctx.run_id)

    store = statewf.Engine(PG_URL, schema=schema)
    other = statewf.Engine(PG_URL, schema=schema)
    out: dict[str, float] = {}
    async with (
        durable.WorkflowEngine(store, workflows=[wake], poll_interval=30) as engine,
        durable.WorkflowEngine(other, recover=False, scheduler=False) as sender,
    ):
        for label, via in (("same engine", engine), ("another process (NOTIFY)", sender)):
            latencies = []
            for _ in range(rounds):
                run = await engine.start_workflow("wake")
                while store.get(run.id).status != "waiting":
                    await asyncio.sleep(0.001)
                await via.trigger_event(run.id, "go")
                sent = time.perf_counter()
                await engine.wait_for_run(run.id, poll_interval=0.001)
                latencies.append(started[run.id] - sent)
            median = statistics.median(latencies)
            out[f"wake_{'local' if via is engine else 'notify'}"] = median
            print(
                f"event to next step, {label + ':':<27}{median * 1000:8.2f} ms (median; "
                "poll interval 30 s)"
            )
    store.close()
    other.close()
    return out


def bench_dbos(schema: str, raw: float, args: argparse.Namespace) -> dict[str, float] | None:
    try:
        from dbos import DBOS, DBOSConfig
    except ImportError:
        print("DBOS: not installed (pip install dbos); skipped")
        return None
    config: DBOSConfig = {
        "name": "statewf-bench",
        "system_database_url": libpq_url(PG_URL),
        "dbos_system_schema": f"{schema}_dbos",
        "log_level": "ERROR",
        "console_log_level": "ERROR",
    }
    try:
        DBOS(config=config)

        @DBOS.step()
        def trivial(i: int) -> int:
            return i

        @DBOS.workflow()
        def ten() -> int:
            return sum(trivial(i) for i in range(10))

        @DBOS.workflow()
        def fifty() -> int:
            return sum(trivial(i) for i in range(50))

        DBOS.launch()

        def one(wf: Any) -> float:
            t0 = time.perf_counter()
            DBOS.start_workflow(wf).get_result()
            return time.perf_counter() - t0

        for _ in range(5):
            one(ten)
        lat10 = statistics.median([one(ten) for _ in range(args.runs)])
        lat50 = statistics.median([one(fifty) for _ in range(max(5, args.runs // 3))])
        per_step = (lat50 - lat10) / 40
        t0 = time.perf_counter()
        handles = [DBOS.start_workflow(ten) for _ in range(args.many)]
        for h in handles:
            h.get_result()
        took = time.perf_counter() - t0
    except Exception as exc:  # any DBOS failure: report and go on
        print(f"DBOS: could not run ({type(exc).__name__}: {exc}); skipped")
        return None
    finally:
        with contextlib.suppress(Exception):
            DBOS.destroy()
        with (
            contextlib.suppress(Exception),
            psycopg.connect(libpq_url(PG_URL), autocommit=True) as conn,
        ):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_dbos" CASCADE')
    print(f"DBOS one 10-step run:                   {lat10 * 1000:8.2f} ms (median)")
    print(
        f"DBOS marginal cost of one step:         {per_step * 1000:8.3f} ms = "
        f"{per_step / raw:.2f} x raw INSERT commit"
    )
    print(
        f"DBOS {args.many} 10-step runs started together: {took:8.2f} s = "
        f"{args.many / took:.1f} runs/s"
    )
    return {"latency_10": lat10, "per_step": per_step, "many_runs_per_s": args.many / took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="sequential runs per latency")
    parser.add_argument("--many", type=int, default=200, help="runs started together")
    parser.add_argument("--inserts", type=int, default=500, help="raw INSERT commits timed")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        raw = raw_insert_commit(schema, args.inserts)
        print(f"raw single-row INSERT commit:           {raw * 1000:8.3f} ms (median)")
        ours = asyncio.run(bench_statewf(schema, raw, args))
        theirs = None if args.no_dbos else bench_dbos(schema, raw, args)
        if theirs:
            print(
                "statewf vs DBOS (higher is better for statewf): 10-step latency "
                f"{theirs['latency_10'] / ours['latency_10']:.2f}x, marginal step "
                f"{theirs['per_step'] / ours['per_step']:.2f}x, throughput "
                f"{ours['many_runs_per_s'] / theirs['many_runs_per_s']:.2f}x"
            )
    finally:
        with psycopg.connect(libpq_url(PG_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
