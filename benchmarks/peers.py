"""statewf against its peers (Absurd, DBOS) in one run: the ``peers`` section of ``run.py``.

Each engine runs on a database of its own (``CREATE DATABASE`` of a unique name,
dropped afterwards), the same workload for all, on the same PostgreSQL:

- **inline**: one run of 10 trivial steps, start to result, no queue wait (median
  of ``--runs``): statewf's ``WorkflowEngine.start_workflow`` + ``wait_for_run``;
  Absurd's ``spawn`` + ``work_batch`` + ``fetch_task_result`` in one process;
  DBOS's ``start_workflow(...).get_result()``. The peers run in a child process;
- **workers**: runs of 10 trivial steps created up front, then executed by 1 and
  4 worker processes, each running up to 8 runs at once (statewf's per-process
  concurrency): statewf through ``bench_workers.bench_statewf``; Absurd's own
  worker (``Absurd.start_worker(concurrency=8)``: a thread pool on the client's
  one connection), its window from the first claim to the last completed run; DBOS
  through ``bench_workers.bench_dbos`` (a queue with ``worker_concurrency=8``).

statewf is measured before and after the peers and the two are averaged (the
shared machine's load drifts). The ratios are statewf ÷ peer as speeds: steps/s
over steps/s, and the peer's latency over statewf's. Peers are installed with
``pip install -e '.[bench]'``: ``dbos``, ``absurd-sdk`` and ``absurdctl``, whose
package carries the ``absurd.sql`` that the SDK needs applied (its ``init``
applies it with ``psql``; here it is run over psycopg). A peer that is not
importable is reported as such, and nothing is measured when neither is.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import psycopg

from benchmarks import bench_workers

if TYPE_CHECKING:
    from benchmarks.run import Report

NOT_INSTALLED = "not installed (pip install -e '.[bench]')"
QUEUE = "bench"  # Absurd's queue: its tables are absurd.t_bench, r_bench, c_bench
STEPS = 10
CONCURRENCY = 8  # runs at once per worker process, as statewf's workers section


@dataclass
class Figures:
    """One engine's figures: inline latency (s); per worker count, steps/s and CPU/step (s)."""

    inline: float
    steps_per_s: dict[int, float] = field(default_factory=dict)
    cpu_per_step: dict[int, float | None] = field(default_factory=dict)


# ---------------------------------------------------------------- what is installed


def absurd_missing() -> str | None:
    """Why Absurd cannot run here, or None."""
    try:
        import absurd_sdk  # noqa: F401
        import absurdctl
    except ImportError:
        return NOT_INSTALLED
    sdk = metadata.version("absurd-sdk")
    if sdk != absurdctl.ABSURD_SCHEMA_TARGET_VERSION:
        return f"absurdctl's schema {absurdctl.ABSURD_SCHEMA_TARGET_VERSION} != SDK {sdk}"
    return None


def dbos_missing() -> str | None:
    """Why DBOS cannot run here, or None."""
    try:
        import dbos  # noqa: F401
    except ImportError:
        return NOT_INSTALLED
    return None


# ---------------------------------------------------------------- statewf


def statewf_inline(url: str, schema: str, runs: int) -> float:
    """Median seconds of one 10-step run, start to result, on statewf's WorkflowEngine."""
    import durable
    import statewf
    from benchmarks.bench_workflows import make_workflow

    store = statewf.Engine(url, schema=schema, pool_size=8)

    async def go() -> float:
        async with durable.WorkflowEngine(store, workflows=[make_workflow("ten", STEPS)]) as eng:

            async def one() -> float:
                t0 = time.perf_counter()
                run = await eng.start_workflow("ten")
                await eng.wait_for_run(run.id, poll_interval=0.0005)
                return time.perf_counter() - t0

            for _ in range(3):
                await one()
            return statistics.median([await one() for _ in range(runs)])

    try:
        return asyncio.run(go())
    finally:
        store.close()


def measure_statewf(url: str, base: str, args: argparse.Namespace) -> Figures:
    """statewf on a fresh database: inline latency, then 1 and 4 worker processes."""
    wargs = worker_args(args)
    with bench_workers.scratch_database(url) as (db_url, database, own):
        try:
            out = Figures(statewf_inline(db_url, f"{base}_inline", args.runs))
            for n in (1, 4):
                r = bench_workers.bench_statewf(db_url, database, base, n, wargs)
                out.steps_per_s[n] = r["steps_per_s"]
                out.cpu_per_step[n] = r["cpu"] / r["steps"]
        finally:
            if not own:
                bench_workers.drop_schemas(db_url, base)
    return out


def worker_args(args: argparse.Namespace) -> argparse.Namespace:
    """The worker workload, as the workers section runs it."""
    return argparse.Namespace(
        runs=args.worker_runs, steps=STEPS, concurrency=CONCURRENCY, db_threads=4, poll=5.0
    )


# ---------------------------------------------------------------- Absurd


def absurd_app(url: str) -> Any:
    """An Absurd client on ``url`` with the benchmark's task registered."""
    from absurd_sdk import Absurd

    app = Absurd(bench_workers.libpq_url(url), queue_name=QUEUE)

    @app.register_task(name="ten")
    def ten(params: Any, ctx: Any) -> int:
        total = 0
        for i in range(STEPS):
            total += ctx.step(f"s{i}", lambda i=i: i)
        return total

    return app


def absurd_inline(url: str, runs: int) -> float:
    """Median seconds of one 10-step task: spawn, claim and run here, read its result."""
    app = absurd_app(url)

    def one() -> float:
        t0 = time.perf_counter()
        task = app.spawn("ten", None)
        app.work_batch(worker_id="inline")
        result = app.fetch_task_result(task["task_id"])
        took = time.perf_counter() - t0
        assert result is not None
        assert result.state == "completed", result
        return took

    try:
        for _ in range(3):
            one()
        return statistics.median([one() for _ in range(runs)])
    finally:
        app.close()


def absurd_process(conf: dict[str, Any], gates: dict[str, Any], results: Any) -> None:
    """One Absurd worker process: its own worker loop from ``start`` until ``stop``."""
    app = absurd_app(conf["url"])
    results.put(("ready", os.getpid()))
    gates["start"].wait()
    cpu0 = sum(os.times()[:2])
    loop = threading.Thread(
        target=app.start_worker,
        kwargs={
            "worker_id": f"bench-{conf['index']}",
            "concurrency": conf["concurrency"],
            "poll_interval": conf["poll"],
        },
    )
    loop.start()
    gates["stop"].wait()
    cpu = sum(os.times()[:2]) - cpu0
    app.stop_worker()
    loop.join(timeout=60)
    app.close()
    results.put(("done", {"cpu": cpu}))


def absurd_workers(url: str, n: int, runs: int) -> tuple[float, float]:
    """``runs`` tasks spawned up front, executed by ``n`` Absurd worker processes."""
    app = absurd_app(url)
    for _ in range(runs):
        app.spawn("ten", None)
    app.close()
    conf = {"url": url, "concurrency": CONCURRENCY, "poll": 0.05}
    done_q = f"SELECT count(*) FROM absurd.t_{QUEUE} WHERE state = 'completed'"
    with (
        bench_workers.Workers(n, conf, target=absurd_process) as workers,
        psycopg.connect(bench_workers.libpq_url(url), autocommit=True) as conn,
    ):
        workers.start()
        bench_workers.wait_until(conn, done_q, runs, timeout=600)
        reports = workers.stop()
    with psycopg.connect(bench_workers.libpq_url(url), autocommit=True) as conn:
        first, last = conn.execute(
            f"SELECT min(started_at), max(completed_at) FROM absurd.r_{QUEUE}"
        ).fetchone() or (None, None)
        (steps,) = conn.execute(f"SELECT count(*) FROM absurd.c_{QUEUE}").fetchone() or (0,)
        conn.execute(f"TRUNCATE absurd.t_{QUEUE}, absurd.r_{QUEUE}, absurd.c_{QUEUE}")
    window = (last - first).total_seconds()
    return steps / window, sum(r["cpu"] for r in reports) / max(1, steps)


def measure_absurd(url: str, base: str, args: argparse.Namespace) -> Figures | str:
    """Absurd on a fresh database (its schema is always ``absurd``)."""
    import absurdctl

    with bench_workers.scratch_database(url) as (db_url, _database, own):
        if not own:
            return "could not run (needs a database of its own: its schema is 'absurd')"
        try:
            with psycopg.connect(bench_workers.libpq_url(db_url), autocommit=True) as conn:
                conn.execute(absurdctl.BUNDLED_SCHEMA_SQL)  # what `absurdctl init` applies
                conn.execute("SELECT absurd.create_queue(%s)", [QUEUE])
            out = Figures(in_child(absurd_inline, db_url, args.runs))
            for n in (1, 4):
                out.steps_per_s[n], out.cpu_per_step[n] = absurd_workers(
                    db_url, n, args.worker_runs
                )
        except Exception as exc:  # any failure of the peer: report it and go on
            return f"could not run ({type(exc).__name__}: {exc})"
    return out


# ---------------------------------------------------------------- DBOS


def dbos_inline(url: str, schema: str, runs: int) -> float:
    """Median seconds of one 10-step DBOS workflow: ``start_workflow(...).get_result()``."""
    from dbos import DBOS

    DBOS(
        config={
            "name": "statewf-bench-inline",
            "system_database_url": bench_workers.libpq_url(url),
            "dbos_system_schema": schema,
            "log_level": "ERROR",
            "console_log_level": "ERROR",
        }
    )

    @DBOS.step()
    def trivial(i: int) -> int:
        return i

    @DBOS.workflow()
    def ten() -> int:
        return sum(trivial(i) for i in range(STEPS))

    DBOS.launch()

    def one() -> float:
        t0 = time.perf_counter()
        DBOS.start_workflow(ten).get_result()
        return time.perf_counter() - t0

    try:
        for _ in range(3):
            one()
        return statistics.median([one() for _ in range(runs)])
    finally:
        DBOS.destroy()


def measure_dbos(url: str, base: str, args: argparse.Namespace) -> Figures | str:
    """DBOS on a fresh database: inline latency, then 1 and 4 processes on a queue."""
    wargs = worker_args(args)
    with bench_workers.scratch_database(url) as (db_url, _database, own):
        try:
            out = Figures(in_child(dbos_inline, db_url, f"{base}_di", args.runs))
            for n in (1, 4):
                d = bench_workers.bench_dbos(db_url, base, n, wargs)
                if isinstance(d, str):
                    return d
                out.steps_per_s[n], out.cpu_per_step[n] = d["steps_per_s"], None
        except Exception as exc:  # any failure of the peer: report it and go on
            return f"could not run ({type(exc).__name__}: {exc})"
        finally:
            if not own:
                bench_workers.drop_schemas(db_url, base)
    return out


# ---------------------------------------------------------------- the section


def in_child(fn: Callable[..., float], *args: Any) -> float:
    """``fn(*args)`` in a spawned process: a peer's globals stay out of this one."""
    with mp.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(fn, args))


PEERS: tuple[tuple[str, str, Callable[[], str | None], Callable[..., Any]], ...] = (
    # name, distribution, why it cannot run (None: it can), measure
    ("Absurd", "absurd-sdk", absurd_missing, measure_absurd),
    ("DBOS", "dbos", dbos_missing, measure_dbos),
)
# issue 13: >= 3x Absurd's steps/s at 4 workers and >= 2x its inline latency; >= 10x DBOS on both
TARGETS: dict[str, dict[Any, float]] = {
    "Absurd": {"inline": 2.0, 4: 3.0},
    "DBOS": {"inline": 10.0, 4: 10.0},
}


def bench_peers(url: str, base: str, args: argparse.Namespace, rep: Report) -> None:
    """statewf, each installed peer, statewf again; ratios against the issue's targets."""
    ready = []
    for name, dist, missing, measure in PEERS:
        why = missing()
        if why:
            rep.add(f"vs {name}", why)
        else:
            ready.append((name, dist, measure))
    if not ready:
        return
    ours = [measure_statewf(url, f"{base}_pa", args)]
    theirs: dict[str, tuple[str, Figures | str]] = {}
    for name, dist, measure in ready:
        print(f"  ({name} {metadata.version(dist)} ...)", flush=True)
        theirs[name] = (metadata.version(dist), measure(url, f"{base}_{name.lower()}", args))
    ours.append(measure_statewf(url, f"{base}_pb", args))
    for name, (version, peer) in theirs.items():
        label = f"{name} {version}"
        if isinstance(peer, str):
            rep.add(f"vs {label}", peer)
            continue
        add_rows(rep, name, label, ours, peer, args.worker_runs)


def add_rows(
    rep: Report, name: str, label: str, ours: list[Figures], peer: Figures, runs: int
) -> None:
    """The inline and 1- / 4-worker rows of one peer: statewf ÷ peer as speeds."""
    targets = TARGETS[name]
    lat = [o.inline for o in ours]
    mean = statistics.fmean(lat)
    ratio = peer.inline / mean
    rep.add(
        f"vs {label}: 10-step run inline, start -> result",
        f"{mean * 1e3:.2f} ms ({' / '.join(f'{x * 1e3:.2f}' for x in lat)})",
        f"{name} {peer.inline * 1e3:.2f} ms",
        ratio,
        f">= {targets['inline']:g}x as fast",
        ratio >= targets["inline"],
    )
    for n in (1, 4):
        rates = [o.steps_per_s[n] for o in ours]
        cpu = statistics.fmean(o.cpu_per_step[n] or 0.0 for o in ours)
        ours_rate = statistics.fmean(rates)
        ratio = ours_rate / peer.steps_per_s[n]
        their_cpu = peer.cpu_per_step[n]
        goal = targets.get(n)
        rep.add(
            f"vs {label}: {n} worker(s), {runs} runs x {STEPS} steps",
            f"{ours_rate:.0f} steps/s ({' / '.join(f'{x:.0f}' for x in rates)}), "
            f"{cpu * 1e6:.0f} us CPU/step",
            f"{name} {peer.steps_per_s[n]:.0f} steps/s"
            + ("" if their_cpu is None else f", {their_cpu * 1e6:.0f} us client CPU/step"),
            ratio,
            "" if goal is None else f">= {goal:g}x",
            None if goal is None else ratio >= goal,
        )
