"""Cost of one persisted transition, against a raw single-row INSERT commit.

Run: ``python benchmarks/bench_transitions.py [--url URL] [--n 2000] [--senders 8]``.
Everything is measured in this run, on the same PostgreSQL, so the ratios mean
something on any machine:

* baseline: a one-row INSERT with psycopg in autocommit (one round trip + commit);
* ``engine.send`` with one sender on a two-state ping-pong machine and on the order
  machine's OUT_OF_STOCK / RESTOCKED cycle (which also writes and runs an effect);
* N senders (processes) on N instances, against N raw INSERT connections.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import statewf

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

ping_pong = statewf.Machine(
    "bench-ping-pong",
    initial="ping",
    states={
        "ping": statewf.State(on={"FLIP": "pong"}),
        "pong": statewf.State(on={"FLIP": "ping"}),
    },
)


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL in the form psycopg.connect takes."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def _wait_until(start_at: float | None) -> None:
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))


def raw_inserts(url: str, table: str, n: int, start_at: float | None = None) -> float:
    """Seconds for n autocommitted single-row INSERTs on one connection."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} (v) VALUES (%s)", ["warm"])
        _wait_until(start_at)
        start = time.perf_counter()
        for i in range(n):
            conn.execute(f"INSERT INTO {table} (v) VALUES (%s)", [str(i)])
        return time.perf_counter() - start


def engine_sends(
    url: str, schema: str, n: int, machine: str, start_at: float | None = None
) -> float:
    """Seconds for n engine.send calls on one instance of ``machine``."""
    engine = statewf.Engine(url, schema=schema, pool_size=2)
    if machine == "ping":
        engine.register(ping_pong)
        inst = engine.create(ping_pong)
        events = ["FLIP"]
    else:
        from examples.order_lifecycle import order_machine

        engine.register(order_machine)
        inst = engine.create(order_machine, context={"order_id": "bench", "total": 1})
        inst = engine.send(inst.id, "PAYMENT_RECEIVED", {"amount": 1})
        events = ["OUT_OF_STOCK", "RESTOCKED"]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):  # the example's effects print
        for event in events * 5:  # warm up: prepared statements, caches
            engine.send(inst.id, event)
        _wait_until(start_at)
        start = time.perf_counter()
        for i in range(n):
            engine.send(inst.id, events[i % len(events)])
        elapsed = time.perf_counter() - start
    engine.close()
    return elapsed


def _raw_worker(args: tuple[str, str, int, float]) -> float:
    return raw_inserts(*args)


def _send_worker(args: tuple[str, str, int, float]) -> float:
    return engine_sends(args[0], args[1], args[2], "ping", args[3])


def parallel(worker: Any, args: list[tuple[Any, ...]]) -> float:
    """Wall seconds for k workers that set up first, then start together."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(args)) as pool:
        pool.map(_noop, range(len(args)))  # start the processes before timing
        start_at = time.time() + 3.0  # every worker is set up by then
        elapsed = pool.map(worker, [(*a, start_at) for a in args])
    # the slowest worker decides the wall time (they started together)
    return max(elapsed)


def _noop(_: int) -> None:
    return None


def best_of(repeats: int, fn: Any, *args: Any) -> float:
    """The median of ``repeats`` runs (seconds)."""
    return statistics.median(fn(*args) for _ in range(repeats))


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--n", type=int, default=2000, help="operations per measurement")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(opts.url), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial primary key, v text)")
    try:
        n = opts.n
        raw = best_of(opts.repeats, raw_inserts, opts.url, table, n)
        ping = best_of(opts.repeats, engine_sends, opts.url, schema, n, "ping")
        order = best_of(opts.repeats, engine_sends, opts.url, schema, n // 2, "order") * 2
        k = opts.senders
        per = max(n // 2, 200)
        raw_par = parallel(_raw_worker, [(opts.url, table, per)] * k)
        send_par = parallel(_send_worker, [(opts.url, schema, per)] * k)
    finally:
        with psycopg.connect(libpq_url(opts.url), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def us(seconds: float, ops: int) -> float:
        return seconds / ops * 1e6

    print(f"PostgreSQL: {opts.url}   n={n}   median of {opts.repeats}")
    print(f"{'measurement':<48}{'us/op':>10}{'ratio':>9}")
    print(f"{'raw INSERT commit (psycopg, autocommit)':<48}{us(raw, n):>10.0f}{1:>9.2f}")
    print(f"{'engine.send, ping-pong machine':<48}{us(ping, n):>10.0f}{ping / raw:>9.2f}")
    print(
        f"{'engine.send, order machine (+ outbox effect)':<48}{us(order, n):>10.0f}"
        f"{order / raw:>9.2f}"
    )
    raw_rate = k * per / raw_par
    send_rate = k * per / send_par
    print(f"\n{k} concurrent senders, {per} ops each")
    print(f"{'raw INSERT commits/s, ' + str(k) + ' connections':<48}{raw_rate:>10.0f}")
    print(
        f"{'engine.send/s, ' + str(k) + ' instances':<48}{send_rate:>10.0f}"
        f"{send_rate / raw_rate:>9.2f}  (of raw throughput)"
    )


if __name__ == "__main__":
    main()
