"""What one claim costs: claims of one run and of a batch, timed where they run.

Used by ``python -m benchmarks --only wake`` (``benchmarks/run.py``): pending runs are
created by a :class:`durable.Client` (nobody executes them), then claimed by
:func:`durable.control.claim.claim` as a worker's scheduler does, one run per claim and
then in batches, each timed in wall and CPU time. ``timing_claims`` times the claims of
an engine while it runs (the wake section's claims of the woken run).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import durable
import durable.execution.leases
import statewf
from durable.control import claim as claiming
from statewf.clock import SystemClock
from statewf.store.leases import ClaimScope


@contextlib.contextmanager
def timing_claims() -> Iterator[list[tuple[float, int]]]:
    """(wall seconds, runs claimed) of every scheduler claim this process's engines make
    meanwhile (:meth:`durable.execution.leases.Leases.claim_due`: in a thread, or from
    the event loop)."""
    seen: list[tuple[float, int]] = []
    leases: Any = durable.execution.leases  # patched: the module, untyped
    original, on_loop = leases.claim_runs, leases.claim_runs_on_loop

    def timed(*args: Any, **kwargs: Any) -> claiming.Claimed:
        start = time.perf_counter()
        done = original(*args, **kwargs)
        seen.append((time.perf_counter() - start, len(done.runs)))
        return done

    async def timed_on_loop(*args: Any, **kwargs: Any) -> claiming.Claimed | None:
        start = time.perf_counter()
        done = await on_loop(*args, **kwargs)
        if done is not None:  # None: it went the thread path (timed there)
            seen.append((time.perf_counter() - start, len(done.runs)))
        return done

    leases.claim_runs = timed
    leases.claim_runs_on_loop = timed_on_loop
    try:
        yield seen
    finally:
        leases.claim_runs, leases.claim_runs_on_loop = original, on_loop


@durable.workflow("claimed")
async def claimed(ctx: durable.Context[Any]) -> int:
    """A run that is only ever claimed here, never executed."""
    return 1


def bench_claims(url: str, schema: str, singles: int, batch: int) -> dict[str, float]:
    """Claim ``singles`` runs one per claim, then ``batch`` runs per claim; the figures."""
    engine = statewf.Engine(url, schema=schema)
    store = engine.store

    async def create(n: int) -> None:
        async with durable.Client(url, schema=schema) as client:
            for _ in range(n):
                await client.start_workflow(claimed)

    asyncio.run(create(singles + 2 * batch))
    scope = ClaimScope(kind="workflow", versions=[("claimed", "1")], owner="bench-claims")
    claimer = claiming.Claimer(owner="bench-claims", scope=scope, lease_for=timedelta(seconds=300))
    clock = SystemClock()
    walls, cpus = [], []
    try:
        for _ in range(singles):
            wall, cpu = time.perf_counter(), time.process_time()
            done = claiming.claim_runs(store, claimer, clock, limit=1)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert len(done.runs) == 1
        batches = []
        for _ in range(2):
            wall, cpu = time.perf_counter(), time.process_time()
            done = claiming.claim_runs(store, claimer, clock, limit=batch)
            batches.append(
                ((time.perf_counter() - wall) / batch, (time.process_time() - cpu) / batch)
            )
            assert len(done.runs) == batch
        empty = []
        for _ in range(20):
            wall = time.perf_counter()
            claiming.claim_runs(store, claimer, clock, limit=batch)
            empty.append(time.perf_counter() - wall)
    finally:
        engine.close()
    return {
        "single_wall": statistics.median(walls),
        "single_cpu": statistics.median(cpus),
        "batch_wall": min(w for w, _ in batches),
        "batch_cpu": min(c for _, c in batches),
        "empty_wall": statistics.median(empty),
    }
