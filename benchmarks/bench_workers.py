"""Worker benchmark on PostgreSQL: 1, 2 and 4 worker processes against raw INSERT commits.

Run: ``python benchmarks/bench_workers.py [--runs 1000 --steps 10 --workers 1,2,4]``
(``STATEWF_BENCH_URL`` picks the server; default: the test server). It prints, all
measured in the same run, on the same PostgreSQL:

- **throughput**: N worker *processes* (``durable.Worker``, ``--concurrency`` runs
  each) execute ``--runs`` runs of ``--steps`` trivial steps. The runs are created
  up front by a ``durable.Client`` (before any worker starts); the workers are
  started together and the clock runs from the first ``claim`` row to the last
  ``completed`` row of the log: steps/s and runs/s;
- **the baseline**: N processes, one connection each, committing one-row INSERTs
  in autocommit mode for ``--raw-seconds``, just before and just after the workers
  (averaged: on a shared machine the load drifts): commits/s. The ratio printed is worker
  steps/s / raw commits/s (the issue's target: >= 0.60 at 4 workers);
- **commits**: a step is one commit, and a run adds its claim, its ``completed``
  row and the lease bookkeeping, plus the workers' own polling and heartbeats. The
  benchmark counts, inside each worker process, every statement, commit and
  rollback its psycopg connections send, and on the server the transactions of the
  benchmark database (``pg_stat_database``), and prints the workers' database
  transactions per second: the fair comparison with the raw commit rate;
- **DBOS** (if ``dbos`` is installed: ``pip install -e ".[bench]"``): the same
  workload on a DBOS queue, enqueued up front by a ``DBOSClient``, executed by N
  processes with the same per-process concurrency (queue polled every 50 ms);
- **idle cost**: N workers with nothing to do for ``--idle-seconds``: statements
  per second per worker (counted in the worker) and server transactions per second
  per worker over their whole life (start and stop included).

To keep other sessions out of the server-side counts, everything runs in a scratch
database created for the run (``statewf_bench_<hex>``; the URL's database with a
fresh schema if ``CREATE DATABASE`` is not allowed), dropped at the end. Other
sessions still share the server's CPU, disks and WAL. ``--profile`` also runs one
worker on 300 runs under cProfile, in CPU time, over its event loop and its database
threads, and prints where the time goes. No timing is asserted anywhere; this
prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import queue
import re
import resource
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlalchemy as sa

from statewf.store import pg_write

URL = os.environ.get("STATEWF_BENCH_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORKFLOW = "bench-steps"


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix, for psycopg and DBOS."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


def server_xacts(url: str, database: str) -> int:
    """Committed + rolled-back transactions of ``database`` so far (server statistics).

    Read over a connection to the server's ``postgres`` database, so that reading
    does not count in ``database`` itself (unless that is the only one available).
    """
    for db in ("postgres", sa.make_url(url).database):
        try:
            with psycopg.connect(libpq_url(with_database(url, db)), autocommit=True) as conn:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                    [database],
                ).fetchone()
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            continue
    return 0


# ---------------------------------------------------------------- counting round trips


class Trips:
    """Statements, commits and rollbacks sent by this process's psycopg connections."""

    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.commits = 0
        self.rollbacks = 0
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "statements": Counter(self.statements),
                "commits": self.commits,
                "rollbacks": self.rollbacks,
            }


TRIPS = Trips()


_KINDS: dict[Any, str] = {}


def statement_kind(query: Any) -> str:
    """A short, stable label for a statement (cached: counting must stay cheap)."""
    key = query if isinstance(query, str | bytes) else repr(query)
    kind = _KINDS.get(key)
    if kind is None:
        kind = _KINDS[key] = _label(query)
    return kind


def _label(query: Any) -> str:
    """A short, stable label for a statement: its verb, first table and what it sets."""
    if isinstance(query, bytes):
        text = query.decode(errors="replace")
    elif isinstance(query, str):
        text = query
    else:
        try:
            text = query.as_string(None)
        except Exception:
            text = repr(query)
    text = " ".join(text.split())
    text = re.sub(r'"?bench_[0-9a-f]+(_\w+)?"?\.', "", text)
    text = re.sub(r"statewf_bench_[0-9a-f]+", "<db>", text)
    match = re.match(r"(WITH \w+ AS \(\s*\w+|\w+)", text, re.I)
    verb = match.group(1).upper() if match else text[:20]
    table = re.search(r"(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)", text, re.I)
    extra = ""
    sets = re.search(r"\bSET\s+(.*?)(?:\bWHERE\b|\bRETURNING\b|$)", text, re.I)
    if sets and verb.startswith(("UPDATE", "WITH")):
        cols = re.findall(r"(\w+)\s*=", sets.group(1))
        extra = " SET " + ",".join(cols[:4]) + (",..." if len(cols) > 4 else "")
    if "SKIP LOCKED" in text.upper():
        extra = " ... FOR UPDATE SKIP LOCKED"
    elif verb.startswith("SELECT") and "set_config" in text:
        extra = " set_config(statement_timeout)"
    elif verb.startswith("SELECT") and "pg_notify" in text:
        extra = " pg_notify"
    elif verb.startswith("SELECT") and "advisory" in text:
        extra = " pg_advisory_xact_lock"
    return f"{verb} {table.group(1) if table else ''}{extra}".strip()


def count_round_trips() -> None:
    """Wrap psycopg so that every statement, commit and rollback in this process is counted."""

    def wrap_execute(cls: Any, name: str) -> None:
        original = getattr(cls, name)

        def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            kind = statement_kind(query)
            with TRIPS.lock:
                TRIPS.statements[kind] += 1
            return original(self, query, *args, **kwargs)

        setattr(cls, name, execute)

    wrap_execute(psycopg.Cursor, "execute")
    wrap_execute(psycopg.Cursor, "executemany")
    commit, rollback = psycopg.Connection.commit, psycopg.Connection.rollback

    def counted_commit(self: Any) -> None:
        with TRIPS.lock:
            TRIPS.commits += 1
        commit(self)

    def counted_rollback(self: Any) -> None:
        with TRIPS.lock:
            TRIPS.rollbacks += 1
        rollback(self)

    psycopg.Connection.commit = counted_commit  # type: ignore[method-assign]
    psycopg.Connection.rollback = counted_rollback  # type: ignore[method-assign]
    # the step write prepared on libpq (statewf/store/pg_write.py): psycopg's cursor
    # never sees it
    prepared = pg_write.PreparedWrite.write_args

    def counted_prepared(self: Any, *args: Any) -> Any:
        rows = prepared(self, *args)
        kind = statement_kind(self.sql)
        with TRIPS.lock:
            TRIPS.statements[kind] += 1
        return rows

    pg_write.PreparedWrite.write_args = counted_prepared  # type: ignore[method-assign]


def trips_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {
        "statements": after["statements"] - before["statements"],
        "commits": after["commits"] - before["commits"],
        "rollbacks": after["rollbacks"] - before["rollbacks"],
    }


# ---------------------------------------------------------------- statewf worker processes


class ThreadProfiles:
    """cProfile in CPU time (``time.thread_time``) for the event loop and every pool thread.

    cProfile alone sees only the thread that enabled it; the database work of a
    worker runs in its thread pool, so each pool thread gets a profiler of its own
    (enabled around each work item) and the reports are merged.
    """

    def __init__(self) -> None:
        from concurrent.futures import thread

        self.main = cProfile.Profile(time.thread_time)
        self.threads: list[cProfile.Profile] = []
        self.on = False
        local = threading.local()
        original = thread._WorkItem.run
        profiles = self

        def run(item: Any) -> None:
            if not profiles.on:
                return original(item)
            prof = getattr(local, "prof", None)
            if prof is None:
                prof = local.prof = cProfile.Profile(time.thread_time)
                profiles.threads.append(prof)
            prof.enable()
            try:
                return original(item)
            finally:
                prof.disable()

        thread._WorkItem.run = run  # type: ignore[method-assign]

    def enable(self) -> None:
        self.on = True
        self.main.enable()

    def disable(self) -> None:
        self.on = False
        self.main.disable()

    def report(self) -> str:
        out = io.StringIO()
        stats = pstats.Stats(self.main, stream=out)
        for prof in self.threads:
            stats.add(prof)
        print("CPU seconds, event loop + pool threads", file=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
        return out.getvalue()


def make_workflow(steps: int) -> Any:
    """The benchmark's workflow: ``steps`` trivial steps."""
    from benchmarks.bench_workflows import make_workflow as trivial_steps

    return trivial_steps(WORKFLOW, steps)


def worker_process(conf: dict[str, Any], gates: dict[str, Any], results: Any) -> None:
    """One worker process: build the worker, wait for ``start``, work until ``stop``."""
    import durable
    import statewf

    count_round_trips()
    wf = make_workflow(conf["steps"])
    store = statewf.Engine(conf["url"], schema=conf["schema"], pool_size=conf["pool"])
    worker = durable.Worker(
        store,
        workflows=[wf],
        queues=["default"],
        concurrency=conf["concurrency"],
        poll_interval=conf["poll"],
        db_threads=conf["threads"],
    )
    profiler = ThreadProfiles() if conf.get("profile") else None
    marks: dict[str, dict[str, Any]] = {}
    cpu: dict[str, float] = {}

    async def go() -> None:
        loop = asyncio.get_running_loop()
        results.put(("ready", os.getpid()))
        await loop.run_in_executor(None, gates["start"].wait)
        marks["start"] = TRIPS.snapshot()
        task = loop.create_task(worker.run(install_signal_handlers=False))
        await loop.run_in_executor(None, gates["mark"].wait)
        marks["mark"] = TRIPS.snapshot()
        cpu["mark"] = sum(os.times()[:2])
        if profiler is not None:
            profiler.enable()
        await loop.run_in_executor(None, gates["stop"].wait)
        marks["stop"] = TRIPS.snapshot()
        cpu["stop"] = sum(os.times()[:2])
        if profiler is not None:
            profiler.disable()
        worker.request_stop()
        await task

    asyncio.run(go())
    store.close()
    profile = profiler.report() if profiler is not None else None
    results.put(
        (
            "done",
            {
                "pid": os.getpid(),
                "window": trips_delta(marks["stop"], marks["mark"]),
                "life": trips_delta(TRIPS.snapshot(), marks["start"]),
                "cpu": cpu["stop"] - cpu["mark"],
                "rss_mib": peak_rss_mib(),
                "profile": profile,
            },
        )
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB.

    ``VmHWM`` on Linux: ``ru_maxrss`` survives ``exec`` there, so a spawned process
    would report the RSS its parent had when it forked.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Workers:
    """N worker processes driven through start / mark / stop events."""

    def __init__(self, n: int, conf: dict[str, Any], target: Any = worker_process) -> None:
        ctx = mp.get_context("spawn")
        self.gates = {name: ctx.Event() for name in ("start", "mark", "stop")}
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(target=target, args=(dict(conf, index=i), self.gates, self.results))
            for i in range(n)
        ]
        self.reports: list[dict[str, Any]] = []

    def __enter__(self) -> Workers:
        for p in self.procs:
            p.start()
        ready = 0
        deadline = time.monotonic() + 120
        while ready < len(self.procs):
            try:
                kind, _pid = self.results.get(timeout=0.5)
            except queue.Empty:
                failed = [p for p in self.procs if p.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(
                        f"{len(failed)} process(es) failed to start (see above)"
                    ) from None
                continue
            assert kind == "ready", kind
            ready += 1
        return self

    def start(self) -> None:
        self.gates["start"].set()

    def mark(self) -> None:
        self.gates["mark"].set()

    def stop(self) -> list[dict[str, Any]]:
        self.gates["mark"].set()
        self.gates["stop"].set()
        for _ in self.procs:
            kind, report = self.results.get(timeout=120)
            assert kind == "done", kind
            self.reports.append(report)
        for p in self.procs:
            p.join(timeout=60)
        return self.reports

    def __exit__(self, *exc: object) -> None:
        for gate in self.gates.values():
            gate.set()
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)


def create_runs(url: str, schema: str, runs: int) -> float:
    """Create ``runs`` runs with a Client (no worker running yet); seconds taken."""
    import durable
    import statewf

    async def go() -> float:
        store = statewf.Engine(url, schema=schema, pool_size=4)
        client = durable.Client(store, db_threads=4)
        t0 = time.perf_counter()
        for first in range(0, runs, 50):
            batch = range(first, min(runs, first + 50))
            await asyncio.gather(*[client.start_workflow(WORKFLOW, None) for _ in batch])
        took = time.perf_counter() - t0
        await client.close()
        store.close()
        return took

    return asyncio.run(go())


PEAK = {"connections": 0}


def wait_until(conn: psycopg.Connection[Any], query: str, target: int, timeout: float) -> int:
    """Poll ``query`` (one number) every 0.2 s until it reaches ``target``; polls made.

    Also records in ``PEAK`` the most connections seen to this database.
    """
    polls = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polls += 2
        row = conn.execute(query).fetchone()
        (used,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone() or (0,)
        PEAK["connections"] = max(PEAK["connections"], int(used))
        if row and int(row[0]) >= target:
            return polls
        time.sleep(0.2)
    raise TimeoutError(f"{query!r} did not reach {target} in {timeout}s")


def bench_statewf(
    url: str,
    database: str,
    base: str,
    n: int,
    args: argparse.Namespace,
    profile: bool = False,
) -> dict[str, Any]:
    schema = f"{base}_w{n}"
    import statewf

    statewf.Engine(url, schema=schema, pool_size=1).close()  # tables, before any worker
    created = create_runs(url, schema, args.runs)
    conf = {
        "url": url,
        "schema": schema,
        "steps": args.steps,
        "concurrency": args.concurrency,
        "threads": args.db_threads,
        "pool": args.db_threads,
        "poll": args.poll,
        "profile": profile,
    }
    runs_q = f"SELECT count(*) FROM \"{schema}\".statewf_instances WHERE status = 'completed'"
    PEAK["connections"] = 0
    with (
        Workers(n, conf) as workers,
        psycopg.connect(libpq_url(url), autocommit=True) as conn,
    ):
        before = server_xacts(url, database)
        workers.start()
        workers.mark()
        polls = wait_until(conn, runs_q, args.runs, timeout=600)
        reports = workers.stop()
    after = server_xacts(url, database)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        first_claim, last_done, claims, steps, statuses = conn.execute(
            f"""SELECT min(created_at) FILTER (WHERE kind = 'claim'),
                       max(created_at) FILTER (WHERE kind = 'completed'),
                       count(*) FILTER (WHERE kind = 'claim'),
                       count(*) FILTER (WHERE kind = 'step'),
                       (SELECT count(*) FROM "{schema}".statewf_instances
                        WHERE status <> 'completed')
                FROM "{schema}".statewf_transitions"""
        ).fetchone()
    window = (last_done - first_claim).total_seconds()
    trips: Counter[str] = Counter()
    commits = rollbacks = 0
    cpu = sum(r["cpu"] for r in reports)
    for r in reports:
        trips += r["window"]["statements"]
        commits += r["window"]["commits"]
        rollbacks += r["window"]["rollbacks"]
    return {
        "workers": n,
        "create_s": created,
        "window": window,
        "runs_per_s": args.runs / window,
        "steps_per_s": steps / window,
        "claims": claims,
        "steps": steps,
        "unfinished": statuses,
        # server transactions of the workers (whole life, start and stop included),
        # less this process's own polls
        "server_xacts": after - before - polls,
        "trips": trips,
        "commits": commits,
        "rollbacks": rollbacks,
        "cpu": cpu,
        "connections": PEAK["connections"],
        "profile": next((r["profile"] for r in reports if r["profile"]), None),
    }


# ---------------------------------------------------------------- raw INSERT baseline


def raw_process(conf: dict[str, Any], gates: dict[str, Any], results: Any) -> None:
    with psycopg.connect(libpq_url(conf["url"]), autocommit=True) as conn:
        table = f'"{conf["schema"]}".raw'
        conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", ['{"warm": 1}'])
        results.put(("ready", os.getpid()))
        gates["start"].wait()
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + conf["seconds"]
        while time.perf_counter() < deadline:
            conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", [f'{{"i": {n}}}'])
            n += 1
        took = time.perf_counter() - t0
    results.put(("done", {"commits": n, "seconds": took, "profile": None}))


def bench_raw(url: str, base: str, n: int, seconds: float) -> float:
    schema = f"{base}_raw"
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".raw (id bigserial primary key, body jsonb)'
        )
    conf = {"url": url, "schema": schema, "seconds": seconds}
    with Workers(n, conf, target=raw_process) as procs:
        procs.start()
        reports = procs.stop()
    return sum(r["commits"] for r in reports) / max(r["seconds"] for r in reports)


# ---------------------------------------------------------------- DBOS


def dbos_config(conf: dict[str, Any], executor: str) -> Any:
    return {
        "name": "statewf-bench",
        "system_database_url": libpq_url(conf["url"]),
        "dbos_system_schema": conf["schema"],
        "sys_db_pool_size": conf["pool"],
        "log_level": "ERROR",
        "console_log_level": "ERROR",
        "executor_id": executor,
        "application_version": "bench",
    }


def dbos_process(conf: dict[str, Any], gates: dict[str, Any], results: Any) -> None:
    from dbos import DBOS

    steps = conf["steps"]
    gates["start"].wait() if conf["index"] else None  # the first one migrates alone
    DBOS(config=dbos_config(conf, f"bench-{conf['index']}"))

    @DBOS.step()
    def trivial(i: int) -> int:
        return i

    @DBOS.workflow(name=WORKFLOW)
    def wf() -> int:
        return sum(trivial(i) for i in range(steps))

    DBOS.launch()
    DBOS.register_queue(
        "bench", worker_concurrency=conf["concurrency"], polling_interval_sec=conf["poll"]
    )
    if not conf["index"]:
        results.put(("ready", os.getpid()))
    gates["stop"].wait()
    DBOS.destroy()
    results.put(("done", {"profile": None}))


def bench_dbos(url: str, base: str, n: int, args: argparse.Namespace) -> dict[str, Any] | str:
    try:
        from dbos import DBOSClient
    except ImportError:
        return "not installed (pip install dbos)"
    schema = f"{base}_dbos_w{n}"
    conf = {
        "url": url,
        "schema": schema,
        "steps": args.steps,
        "concurrency": args.concurrency,
        "pool": args.concurrency + 2,
        "poll": 0.05,
    }
    try:
        # process 0 migrates and registers the queue; the runs are enqueued up front,
        # then the other processes start (all dequeue from the same queue)
        ctx = mp.get_context("spawn")
        gates = {name: ctx.Event() for name in ("start", "mark", "stop")}
        results = ctx.Queue()
        procs = [
            ctx.Process(target=dbos_process, args=(dict(conf, index=i), gates, results))
            for i in range(n)
        ]
        try:
            procs[0].start()
            kind, _ = results.get(timeout=120)
            assert kind == "ready"
            client = DBOSClient(system_database_url=libpq_url(url), dbos_system_schema=schema)
            t0 = time.perf_counter()
            for _ in range(args.runs):
                client.enqueue({"workflow_name": WORKFLOW, "queue_name": "bench"})
            enqueue_s = time.perf_counter() - t0
            client.destroy()
            for p in procs[1:]:
                p.start()
            gates["start"].set()
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                wait_until(
                    conn,
                    f"SELECT count(*) FROM \"{schema}\".workflow_status WHERE status = 'SUCCESS'"
                    f" AND name = '{WORKFLOW}'",
                    args.runs,
                    timeout=600,
                )
                first, last, spread = conn.execute(
                    f"""SELECT min(started_at_epoch_ms), max(updated_at),
                               count(DISTINCT executor_id)
                        FROM "{schema}".workflow_status WHERE name = %s""",
                    [WORKFLOW],
                ).fetchone()
            gates["stop"].set()
        finally:
            gates["start"].set()
            gates["stop"].set()
            for p in procs:
                if p.pid is not None:
                    p.join(timeout=60)
                    if p.is_alive():
                        p.terminate()
    except Exception as exc:  # any DBOS failure: report and go on
        return f"could not run ({type(exc).__name__}: {exc})"
    window = (last - first) / 1000
    return {
        "workers": n,
        "create_s": enqueue_s,
        "window": window,
        "runs_per_s": args.runs / window,
        "steps_per_s": args.runs * args.steps / window,
        "executors": spread,
    }


# ---------------------------------------------------------------- idle workers


def bench_idle(url: str, database: str, base: str, n: int, args: argparse.Namespace) -> dict:
    schema = f"{base}_idle"
    import statewf

    statewf.Engine(url, schema=schema, pool_size=1).close()
    conf = {
        "url": url,
        "schema": schema,
        "steps": args.steps,
        "concurrency": args.concurrency,
        "threads": args.db_threads,
        "pool": args.db_threads,
        "poll": args.idle_poll,
    }
    time.sleep(1.5)  # earlier phases' backends have flushed their statistics
    before = server_xacts(url, database)
    t0 = time.monotonic()
    with Workers(n, conf) as workers:
        workers.start()
        time.sleep(args.idle_warmup)  # started, registered, first claim pass done
        workers.mark()
        t_mark = time.monotonic()
        time.sleep(args.idle_seconds)
        t_stop = time.monotonic()
        reports = workers.stop()
    life = time.monotonic() - t0
    time.sleep(1.5)
    after = server_xacts(url, database)
    statements = sum(sum(r["window"]["statements"].values()) for r in reports)
    commits = sum(r["window"]["commits"] for r in reports)
    window = t_stop - t_mark
    kinds: Counter[str] = Counter()
    for r in reports:
        kinds += r["window"]["statements"]
    return {
        "workers": n,
        "window": window,
        "statements_per_s_each": statements / window / n,
        "tx_per_s_each": commits / window / n,
        "server_xacts": after - before,
        "server_per_s_each": (after - before) / life / n,
        "life": life,
        "kinds": kinds,
        "rss_mib": max(r["rss_mib"] for r in reports),
    }


# ---------------------------------------------------------------- the run


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[tuple[str, str, bool]]:
    """A database of its own for this run if the server allows it: (url, name, own)."""
    name = f"statewf_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"(no scratch database: {exc}; using {sa.make_url(url).database!r}, shared)")
        yield url, str(sa.make_url(url).database), False
        return
    try:
        yield with_database(url, name), name, True
    finally:
        for attempt in range(10):
            try:
                with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except psycopg.OperationalError as exc:
                if attempt == 9:
                    print(f"could not drop the scratch database {name!r}: {exc}")
                time.sleep(3)


def drop_schemas(url: str, base: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"{base}%"]
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def print_trips(result: dict[str, Any], runs: int, steps: int) -> None:
    n_steps = runs * steps
    print(
        f"  {result['workers']} worker(s), per run (client-side, whole measured phase): "
        f"{sum(result['trips'].values()) / runs:.1f} statements, "
        f"{result['commits'] / runs:.2f} explicit commits (autocommit statements aside); "
        f"per step {sum(result['trips'].values()) / n_steps:.2f} statements"
    )
    print(
        f"    worker CPU (user+sys, all {result['workers']} processes, while the runs executed): "
        f"{result['cpu']:.2f} s = {result['cpu'] / max(1, result['steps']) * 1e6:.0f} us per step"
    )
    for kind, count in result["trips"].most_common(12):
        print(f"    {count / runs:7.2f} / run  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per worker count")
    parser.add_argument("--steps", type=int, default=10, help="trivial steps per run")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--concurrency", type=int, default=8, help="runs per worker at once")
    parser.add_argument(
        "--db-threads",
        type=int,
        default=4,
        help="each worker's db_threads and pool_size (a worker opens up to two pools of this)",
    )
    parser.add_argument("--poll", type=float, default=5.0, help="worker poll_interval (s)")
    parser.add_argument(
        "--raw-seconds", type=float, default=4.0, help="raw INSERTs before and after each"
    )
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle measurement")
    parser.add_argument("--idle-warmup", type=float, default=4.0, help="before idle window")
    parser.add_argument("--idle-poll", type=float, default=5.0, help="idle poll_interval (s)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle measurement")
    parser.add_argument("--profile", action="store_true", help="profile one worker (cProfile)")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    base = f"bench_{uuid.uuid4().hex[:8]}"
    rows: list[tuple[str, ...]] = []
    ours: dict[int, dict[str, Any]] = {}
    theirs: dict[int, dict[str, Any] | str] = {}
    raw: dict[int, float] = {}
    idle: dict[str, Any] | None = None
    profiled: dict[str, Any] | None = None
    with psycopg.connect(libpq_url(URL), autocommit=True) as conn:
        used, most = conn.execute(
            "SELECT count(*), current_setting('max_connections') FROM pg_stat_activity"
        ).fetchone() or (0, "?")
    print(f"server: {used} of {most} connections in use by all sessions before the benchmark")
    with scratch_database(URL) as (url, database, own):
        try:
            for n in counts:
                # the baseline just before and just after the workers, averaged: the
                # machine's load drifts, and the ratio should compare like with like
                before = bench_raw(url, base, n, args.raw_seconds)
                ours[n] = r = bench_statewf(url, database, base, n, args)
                after = bench_raw(url, base, n, args.raw_seconds)
                raw[n] = (before + after) / 2
                print(
                    f"raw INSERT, {n} connection(s): {raw[n]:8.0f} commits/s "
                    f"({before:.0f} before the workers, {after:.0f} after)"
                )
                print(
                    f"statewf, {n} worker(s): {r['steps_per_s']:7.0f} steps/s, "
                    f"{r['runs_per_s']:6.1f} runs/s over {r['window']:.2f} s "
                    f"({r['claims']} claims, {r['unfinished']} unfinished; runs created "
                    f"in {r['create_s']:.1f} s before; at most {r['connections']} connections)"
                )
                print_trips(r, args.runs, args.steps)
                if not args.no_dbos:
                    theirs[n] = d = bench_dbos(url, base, n, args)
                    if isinstance(d, str):
                        print(f"DBOS, {n} process(es): {d}; skipped")
                    else:
                        print(
                            f"DBOS, {n} process(es): {d['steps_per_s']:7.0f} steps/s, "
                            f"{d['runs_per_s']:6.1f} runs/s over {d['window']:.2f} s "
                            f"({d['executors']} executors took runs)"
                        )
            if not args.no_idle:
                idle = bench_idle(url, database, base, max(counts), args)
            if args.profile:
                prof_args = argparse.Namespace(**vars(args))
                prof_args.runs = min(args.runs, 300)
                profiled = bench_statewf(url, database, f"{base}_prof", 1, prof_args, True)
        finally:
            if not own:
                drop_schemas(url, base)

    print()
    print(
        f"{args.runs} runs x {args.steps} trivial steps; concurrency {args.concurrency} per "
        f"worker; {'scratch database' if own else 'shared database'}; {os.cpu_count()} CPUs"
    )
    header = (
        "workers",
        "raw commits/s",
        "steps/s",
        "runs/s",
        "steps/raw",
        "worker tx/s",
        "tx/raw",
        "tx/run",
        "DBOS steps/s",
        "statewf/DBOS",
    )
    for n in counts:
        r = ours[n]
        tx = r["server_xacts"]
        d = theirs.get(n)
        rows.append(
            (
                str(n),
                f"{raw[n]:.0f}",
                f"{r['steps_per_s']:.0f}",
                f"{r['runs_per_s']:.1f}",
                f"{r['steps_per_s'] / raw[n]:.2f}",
                f"{tx / r['window']:.0f}",
                f"{tx / r['window'] / raw[n]:.2f}",
                f"{tx / args.runs:.1f}",
                f"{d['steps_per_s']:.0f}" if isinstance(d, dict) else "-",
                f"{r['steps_per_s'] / d['steps_per_s']:.2f}" if isinstance(d, dict) else "-",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(
        "tx = the workers' transactions as the server counts them (pg_stat_database of the "
        "scratch database; each autocommitted statement is one), over the workers' whole "
        "life (start and stop add a few dozen), per second of the measured window; raw = "
        "one-row INSERT commits/s with as many connections as worker processes"
    )
    if idle is not None:
        print(
            f"idle: {idle['workers']} workers for {idle['window']:.0f} s: "
            f"{idle['statements_per_s_each']:.2f} statements/s and "
            f"{idle['tx_per_s_each']:.2f} commits/s per worker (client-side); server: "
            f"{idle['server_per_s_each']:.2f} transactions/s per worker over "
            f"{idle['life']:.0f} s including start and stop"
        )
        for kind, count in idle["kinds"].most_common(8):
            print(f"    {count / idle['window'] / idle['workers']:6.3f}/s per worker  {kind}")
    if profiled is not None:
        print()
        print(
            f"profile: 1 worker, {profiled['steps']} steps in {profiled['window']:.2f} s "
            f"({profiled['steps_per_s']:.0f} steps/s under cProfile)"
        )
        print(profiled["profile"])


if __name__ == "__main__":
    main()
