"""A claim on PostgreSQL made in a thread (``claim_runs``) goes on libpq, as the event
loop's does: the runs it takes, their leases and replay logs, what a failure half-way
leaves behind, claims from many threads at once, and a parameter that needs psycopg."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import durable
import statewf
from durable.control import claim as claiming
from durable.log.records import KIND_STEP
from statewf.clock import SystemClock
from statewf.records import Instance
from statewf.store.leases import ClaimScope
from statewf.store.loop_claim import LoopClaimer
from statewf.store.runs import load_replay
from tests.conftest import PG_URL

pytestmark = pytest.mark.postgres


@durable.workflow("blocking")
async def blocking(ctx: durable.Context[Any]) -> int:
    """Only ever claimed here, never executed."""
    return 1


def _create(schema: str, n: int) -> list[str]:
    async def create() -> list[str]:
        async with durable.Client(PG_URL, schema=schema) as client:
            return [(await client.start_workflow(blocking)).id for _ in range(n)]

    return asyncio.run(create())


def _lease(store: Any, run_id: str) -> tuple[str | None, int]:
    """The run's lease holder and epoch, as stored."""
    t = store.tables.instances
    with store.transaction(readonly=True) as tx:
        row = tx.conn.execute(
            sa.select(t.c.lease_owner, t.c.lease_epoch).where(t.c.id == run_id)
        ).one()
    return row.lease_owner, int(row.lease_epoch)


def _claimer(owner: str, **kwargs: Any) -> claiming.Claimer:
    scope = ClaimScope(kind="workflow", versions=[("blocking", blocking.version)], owner=owner)
    return claiming.Claimer(owner=owner, scope=scope, lease_for=timedelta(seconds=60), **kwargs)


class _Stamp(datetime):
    """An instant of a type the text parameters leave to psycopg (not ``datetime`` itself)."""


class _StampClock:
    """A clock (not the wall clock: its time goes in the claim's parameters) whose
    instants are :class:`_Stamp`."""

    def now(self) -> datetime:
        now = datetime.now(UTC)
        return _Stamp(*now.timetuple()[:6], now.microsecond, tzinfo=UTC)


def test_a_claim_in_a_thread_takes_runs_with_leases_and_replay_logs(pg_schema: str) -> None:
    ids = _create(pg_schema, 3)
    engine = statewf.Engine(PG_URL, schema=pg_schema)
    try:
        store = engine.store
        done = claiming.claim_runs(store, _claimer("me"), SystemClock(), limit=2, next_wake=True)
        assert len(done.runs) == 2
        assert done.asked
        for claimed in done.runs:
            with store.transaction(readonly=True) as tx:
                replay = load_replay(tx, claimed.snapshot.id, KIND_STEP)
            assert replay is not None
            assert claimed.snapshot == replay[0]
            assert claimed.records == replay[1]
            assert claimed.records[-1].kind == "claim"
            assert (claimed.lease.owner, claimed.lease.epoch) == ("me", 1)
            assert _lease(store, claimed.snapshot.id) == ("me", 1)
        # the third run is left, and taken by the next claim
        rest = claiming.claim_runs(store, _claimer("other"), SystemClock(), limit=5)
        assert {r.snapshot.id for r in done.runs + rest.runs} == set(ids)
        assert [r.lease.owner for r in rest.runs] == ["other"]
    finally:
        engine.close()


def test_a_claim_that_fails_between_its_round_trips_holds_and_writes_nothing(
    pg_schema: str,
) -> None:
    (run_id,) = _create(pg_schema, 1)

    def refuse(_snapshot: Instance) -> dict[str, Any]:
        raise RuntimeError("refused with the run locked")

    engine = statewf.Engine(PG_URL, schema=pg_schema)
    try:
        store = engine.store
        with pytest.raises(RuntimeError, match="refused"):
            claiming.claim_runs(store, _claimer("me", prepare=refuse), SystemClock(), limit=1)
        # the run is neither held nor locked: the next claim (SKIP LOCKED) takes it
        assert _lease(store, run_id) == (None, 0)
        done = claiming.claim_runs(store, _claimer("other"), SystemClock(), limit=1)
        assert [r.snapshot.id for r in done.runs] == [run_id]
        assert [r.kind for r in done.runs[0].records] == ["create", "claim"]
    finally:
        engine.close()


def test_claims_from_many_threads_take_each_run_once(pg_schema: str) -> None:
    ids = _create(pg_schema, 60)
    engine = statewf.Engine(PG_URL, schema=pg_schema)
    taken: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def claim_all(owner: str) -> None:
        try:
            while done := claiming.claim_runs(
                engine.store, _claimer(owner), SystemClock(), limit=1
            ).runs:
                taken.extend((owner, r.snapshot.id) for r in done)
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sorted(run_id for _, run_id in taken) == sorted(ids)
        for owner, run_id in taken:
            assert _lease(engine.store, run_id) == (owner, 1)
    finally:
        engine.close()


def test_a_connection_shared_with_the_event_loops_claims_works_for_both(
    pg_schema: str,
) -> None:
    """The loop's claimer hands its connections back to the pool a thread's claim draws
    from: statements prepared on one are not prepared again on the other."""
    ids = _create(pg_schema, 4)
    engine = statewf.Engine(PG_URL, schema=pg_schema)
    store = engine.store

    async def on_loop() -> list[str]:
        claimer = LoopClaimer(store)
        try:
            done = await claiming.claim_runs_on_loop(
                claimer, _claimer("loop"), SystemClock(), limit=2
            )
        finally:
            claimer.close()
        assert done is not None
        return [r.snapshot.id for r in done.runs]

    try:
        first = asyncio.run(on_loop())
        assert store.fast_path is not None
        store.fast_path.release()  # its kept connections back to the pool: the loop's mix in
        then = claiming.claim_runs(store, _claimer("thread"), SystemClock(), limit=1).runs
        last = asyncio.run(on_loop())
        assert sorted([*first, *(r.snapshot.id for r in then), *last]) == sorted(ids)
    finally:
        engine.close()


def test_a_parameter_psycopg_must_adapt_still_claims(pg_schema: str) -> None:
    (run_id,) = _create(pg_schema, 1)
    engine = statewf.Engine(PG_URL, schema=pg_schema)
    try:
        done = claiming.claim_runs(engine.store, _claimer("me"), _StampClock(), limit=1)
        assert [r.snapshot.id for r in done.runs] == [run_id]
        assert _lease(engine.store, run_id) == ("me", 1)
    finally:
        engine.close()


def test_a_claim_the_server_refuses_discards_its_connection_quietly(
    pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # a primary turned read-only (after a failover): the FOR UPDATE select is refused
    # with an error that is not an OperationalError; the claim closes its connection,
    # which must leave the pool without a reset attempt, and the next claim goes on
    ids = _create(pg_schema, 2)
    engine = statewf.Engine(PG_URL, schema=pg_schema)
    try:
        store = engine.store
        fast = store.fast_path
        assert fast is not None
        claiming.claim_runs(store, _claimer("me"), SystemClock(), limit=1)
        fast.run(lambda cur: cur.execute("SET default_transaction_read_only = on"))
        with caplog.at_level("WARNING"), pytest.raises(statewf.StoreError, match="read-only"):
            claiming.claim_runs(store, _claimer("me"), SystemClock(), limit=1)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
        again = claiming.claim_runs(store, _claimer("me"), SystemClock(), limit=1)
        assert len(again.runs) == 1
        assert sorted(_lease(store, i)[0] or "" for i in ids) == ["me", "me"]
    finally:
        engine.close()
