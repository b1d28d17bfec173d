"""Flow control across workers: queue limits, worker concurrency, per-resource limits, routing.

Limits are checked twice: by sampling the instances table (runs under a lease) while
the workers run, and afterwards from the log's times (each execution spans its
claim/recover/wake row to its next suspension or final row).
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import warnings
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import flow_app
import pytest
from flow_app import Running, held, intervals, max_overlap, work_intervals

import durable
import statewf
from tests.conftest import require_postgres, tracked

Db = dict[str, str | None]


@pytest.fixture(autouse=True)
def _clear_ledger() -> None:
    flow_app.LEDGER.clear()


def worker_of(db: Db, **kw: Any) -> durable.Worker:
    """A worker on its own statewf Engine, closed when the test ends."""
    engine = tracked(statewf.Engine(db["url"], schema=db["schema"]))
    kw.setdefault("workflows", [flow_app.three_impl])
    kw.setdefault("queues", ["q"])
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("shutdown_timeout", 5.0)
    return durable.Worker(engine, **kw)


class Sampler:
    """Samples the runs under a lease every few milliseconds while the workers run."""

    def __init__(self, engine: statewf.Engine) -> None:
        self.engine = engine
        self.samples: list[list[dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.samples.append(await asyncio.to_thread(held, self.engine))
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    def most(self, key: Any) -> int:
        """Most leased runs for which ``key(row)`` is true, in any one sample."""
        return max((sum(1 for r in s if key(r)) for s in self.samples), default=0)


async def finish_all(client: durable.Client, runs: list[Any], timeout: float = 60) -> None:
    for run in runs:
        done = await client.wait_for_run(run.id, timeout=timeout)
        assert done.status == "completed", done


def spans_of(engine: statewf.Engine, runs: list[Any]) -> dict[str, list[tuple[Any, Any]]]:
    """Each run's execution, from its log: its first step's start to its final row.

    (Claim row to final row would be the natural span, but on PostgreSQL a claim row
    can be stamped a little before releases the claim counted on: see
    test_worker_load.)
    """
    spans = {}
    for run in runs:
        history = engine.history(run.id)
        claims = intervals(history)
        assert len(claims) == 1  # claimed once, executed once
        spans[run.id] = work_intervals(history)
        assert claims[0][0] <= spans[run.id][0][0]  # claimed before its first step
    return spans


def test_a_queue_limit_holds_across_two_workers(db: Db) -> None:
    async def main() -> None:
        async with durable.Client(db["url"], schema=db["schema"]) as client:
            runs = [
                await client.start_workflow(flow_app.three, {"sleep": 0.05, "tag": str(i)})
                for i in range(12)
            ]
            queue = durable.Queue("q", concurrency=2)
            w1 = worker_of(db, queues=[queue], concurrency=4)
            w2 = worker_of(db, queues=[queue], concurrency=4)
            async with Sampler(client.engine) as sampler, Running(w1, w2):
                await finish_all(client, runs)
            spans = spans_of(client.engine, runs)
            assert max_overlap([s for ss in spans.values() for s in ss]) <= 2
            assert sampler.most(lambda r: r["queue"] == "q") <= 2
            assert sampler.most(lambda r: r["queue"] == "q") == 2  # the limit, not less
            assert Counter(r for r, _ in flow_app.LEDGER) == {r.id: 3 for r in runs}

    asyncio.run(main())


def test_worker_concurrency_caps_the_runs_one_worker_executes(db: Db) -> None:
    async def main() -> None:
        async with durable.Client(db["url"], schema=db["schema"]) as client:
            runs = [await client.start_workflow(flow_app.three, {"sleep": 0.05}) for _ in range(10)]
            worker = worker_of(db, concurrency=3)
            async with Sampler(client.engine) as sampler, Running(worker):
                await finish_all(client, runs)
            spans = spans_of(client.engine, runs)
            assert max_overlap([s for ss in spans.values() for s in ss]) <= 3
            assert sampler.most(lambda r: r["lease_owner"] == worker.worker_id) <= 3
            assert sampler.most(lambda r: True) == 3  # it does use its three slots

    asyncio.run(main())


def test_a_resource_limit_holds_and_does_not_starve_other_resources(db: Db) -> None:
    async def main() -> None:
        async with durable.Client(db["url"], schema=db["schema"]) as client:
            a_runs = [
                await client.start_workflow(flow_app.three, {"sleep": 0.05}, resource_id="A")
                for _ in range(6)
            ]
            b_runs = [
                await client.start_workflow(flow_app.three, {"sleep": 0.05}, resource_id="B")
                for _ in range(3)
            ]
            w1 = worker_of(db, concurrency=4, resource_concurrency=1)
            w2 = worker_of(db, concurrency=4, resource_concurrency=1)
            async with Sampler(client.engine) as sampler, Running(w1, w2):
                await finish_all(client, a_runs + b_runs)
            for tenant, runs in (("A", a_runs), ("B", b_runs)):
                spans = spans_of(client.engine, runs)
                assert max_overlap([s for ss in spans.values() for s in ss]) <= 1, tenant
                assert sampler.most(lambda r, t=tenant: r["resource_id"] == t) <= 1, tenant
            # B was started after all of A, yet ran while A still had runs waiting
            a_spans = spans_of(client.engine, a_runs)
            b_spans = spans_of(client.engine, b_runs)
            last_a_end = max(e for ss in a_spans.values() for _, e in ss)
            first_b_start = min(s for ss in b_spans.values() for s, _ in ss)
            last_b_end = max(e for ss in b_spans.values() for _, e in ss)
            assert first_b_start < last_a_end
            assert last_b_end < last_a_end  # 3 runs of B beside 6 of A, one at a time each

    asyncio.run(main())


def test_workers_only_take_runs_of_their_queues(db: Db) -> None:
    async def main() -> None:
        async with durable.Client(db["url"], schema=db["schema"]) as client:
            a_runs = [await client.start_workflow(flow_app.three, {}, queue="a") for _ in range(4)]
            b_runs = [await client.start_workflow(flow_app.three, {}, queue="b") for _ in range(4)]
            wa = worker_of(db, queues=["a"], concurrency=2)
            async with Running(wa):
                await finish_all(client, a_runs)
                await asyncio.sleep(0.8)  # eight poll intervals
                for run in b_runs:
                    assert [r.kind for r in client.engine.history(run.id)] == ["create"]
                wb = worker_of(db, queues=["b", "c"], concurrency=2)
                async with Running(wb):
                    await finish_all(client, b_runs)
            by_worker: dict[str, set[str]] = defaultdict(set)
            for run in a_runs + b_runs:
                (claim,) = [r for r in client.engine.history(run.id) if r.kind == "claim"]
                by_worker[claim.meta["worker"]].add(run.id)
            assert by_worker == {
                wa.worker_id: {r.id for r in a_runs},
                wb.worker_id: {r.id for r in b_runs},
            }

    asyncio.run(main())


def test_a_worker_given_a_url_leaves_no_connection_open_after_it_stops() -> None:
    require_postgres()
    import uuid

    import sqlalchemy as sa

    from tests.conftest import PG_URL

    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def main() -> durable.Worker:
        worker = durable.Worker(
            PG_URL, schema=schema, workflows=[flow_app.three_impl], queues=["q"], poll_interval=0.1
        )
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.sleep(0.3)
        worker.request_stop()
        await task
        return worker

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            worker = asyncio.run(main())
            pool = worker.engine.store.engine.pool
            left = pool.checkedin() + pool.checkedout()
            worker.engine.close()  # the test's own clean-up (what shutdown should have done)
            gc.collect()
        assert left == 0, f"{left} connection(s) left open by a stopped worker"
    finally:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def test_a_freed_resource_slot_is_reused_without_waiting_for_the_next_poll(db: Db) -> None:
    async def main() -> None:
        async with durable.Client(db["url"], schema=db["schema"]) as client:
            runs = [
                await client.start_workflow(flow_app.three, {}, resource_id="A") for _ in range(4)
            ]
            worker = worker_of(db, concurrency=4, resource_concurrency=1, poll_interval=2.0)
            async with Running(worker):
                await asyncio.sleep(0.2)  # started; the first claim took one run of A
                began = asyncio.get_running_loop().time()
                try:
                    async with asyncio.timeout(3.0):  # buggy: ~2 s per run, 6 s in all
                        await finish_all(client, runs)
                finally:
                    took = asyncio.get_running_loop().time() - began
            assert took < 3.0

    asyncio.run(main())


def test_a_claim_row_is_stamped_when_the_claim_is_made(sqlite_url: str) -> None:
    db: Db = {"url": sqlite_url, "schema": None}

    async def main() -> None:
        async with durable.Client(sqlite_url) as client:
            run = await client.start_workflow(flow_app.three, {})
            worker = worker_of(db)
            blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
                async with Running(worker):
                    await asyncio.sleep(0.5)  # the worker's first claim waits for it
                    assert [r.kind for r in client.engine.history(run.id)] == ["create"]
                    unlocked = datetime.now(UTC)
                    blocker.execute("COMMIT")
                    assert (await client.wait_for_run(run.id, timeout=20)).status == "completed"
            finally:
                blocker.close()
            (claim,) = [r for r in client.engine.history(run.id) if r.kind == "claim"]
            assert claim.created_at >= unlocked, (
                f"claim row stamped {claim.created_at.time()}, but the run could only be "
                f"claimed after {unlocked.time()}"
            )

    asyncio.run(main())
