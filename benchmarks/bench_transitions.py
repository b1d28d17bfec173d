"""Cost of one persisted transition, against a raw single-row INSERT commit.

Run: ``python benchmarks/bench_transitions.py [--url URL] [--n 2000] [--senders 8]``.
Everything is measured in this run, on the same PostgreSQL, so the ratios mean
something on any machine:

* baseline: a one-row INSERT with psycopg in autocommit (one round trip + commit);
* ``engine.send`` with one sender on a two-state ping-pong machine and on the order
  machine's OUT_OF_STOCK / RESTOCKED cycle (which also writes and runs an effect);
* ``engine.send`` on a statechart of three levels with two parallel regions (one
  event moves both regions: two transitions in one microstep), against the ping-pong
  machine's event in the same run; with the store calls (round trips) of one send
  (the SCXML selection runs in memory: the store calls must be the same);
* the pure decision alone (no database) for both machines;
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


S = statewf.State
#: three levels (top > work > left/right), two parallel regions, one event moves both
chart = statewf.Machine(
    "bench-chart",
    initial="top",
    states={
        "top": S(
            initial="work",
            on={"STOP": "stopped"},
            states={
                "work": S(
                    parallel=True,
                    states={
                        "left": S(
                            initial="a", states={"a": S(on={"FLIP": "b"}), "b": S(on={"FLIP": "a"})}
                        ),
                        "right": S(
                            initial="c", states={"c": S(on={"FLIP": "d"}), "d": S(on={"FLIP": "c"})}
                        ),
                    },
                )
            },
        ),
        "stopped": S(final=True),
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
    if machine in ("ping", "chart"):
        spec = ping_pong if machine == "ping" else chart
        engine.register(spec)
        inst = engine.create(spec)
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


def round_trips_per_send(url: str, schema: str, machine: statewf.Machine, n: int = 50) -> float:
    """Store calls one engine.send makes, on average: conditional writes, reads, transactions.

    On PostgreSQL a send is one conditional write (decided on the cached snapshot) when
    nobody raced it; each call is one round trip, a transaction several.
    """
    engine = statewf.Engine(url, schema=schema, pool_size=2)
    engine.register(machine)
    inst = engine.create(machine)
    store: Any = engine.store
    count = [0]

    def counted(fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            return fn(*args, **kwargs)

        return call

    for name in ("write_if_version", "read_instance", "transaction"):
        setattr(store, name, counted(getattr(store, name)))
    for _ in range(n):
        engine.send(inst.id, "FLIP")
    engine.close()
    return count[0] / n


def pure_decisions(machine: statewf.Machine, n: int) -> float:
    """Seconds for n decisions of FLIP in memory (start once, then decide, decide...)."""
    from datetime import UTC, datetime

    from statewf.adapter import CompiledMachine
    from statewf.decide import decide, start

    compiled = CompiledMachine(machine)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    snapshot = start(compiled, instance_id="b", context=None, now=now).snapshot
    begin = time.perf_counter()
    for _ in range(n):
        snapshot = decide(compiled, snapshot, "FLIP", None, now).snapshot
    return time.perf_counter() - begin


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
        charted = best_of(opts.repeats, engine_sends, opts.url, schema, n, "chart")
        flat_sql = round_trips_per_send(opts.url, schema, ping_pong)
        chart_sql = round_trips_per_send(opts.url, schema, chart)
        flat_pure = best_of(opts.repeats, pure_decisions, ping_pong, n)
        chart_pure = best_of(opts.repeats, pure_decisions, chart, n)
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
    print(
        f"{'engine.send, statechart (3 levels, 2 regions)':<48}{us(charted, n):>10.0f}"
        f"{charted / raw:>9.2f}   {charted / ping:.2f}x a flat event (target <= 1.2)"
    )
    print(f"{'store calls per send: flat / statechart':<48}{flat_sql:>10.1f}{chart_sql:>9.1f}")
    print(
        f"{'pure decide, flat / statechart (us, no database)':<48}"
        f"{us(flat_pure, n):>10.0f}{us(chart_pure, n):>9.0f}"
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
