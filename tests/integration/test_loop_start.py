"""A run an engine starts and executes itself: its rows in one statement from the event
loop (PostgreSQL), the same rows as the transaction's path; a taken id or idempotency key
answered as before; the lease measured on the database's clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import durable
import statewf
from durable.execution import batching
from statewf.records import TransitionRecord
from statewf.store import pg_start
from tests.conftest import PG_URL, require_postgres

pytestmark = pytest.mark.postgres


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@durable.workflow("held")
async def held(ctx: durable.Context[Any]) -> Any:
    await ctx.step.wait_for("go", event="go")
    return ctx.input


async def nap() -> str:
    await asyncio.sleep(1.5)
    return "rested"


@durable.workflow("slow")
async def slow(ctx: durable.Context[Any]) -> Any:
    return await ctx.step.run("nap", nap)


@durable.workflow("quick")
async def quick(ctx: durable.Context[Any]) -> Any:
    return await ctx.step.run("echo", lambda: ctx.input)


INPUT = {"z": 1, "a": [1.5, None, "é☃"], "m": {"y": True, "b": 1e-7}}
INSTANCE_COLUMNS = (
    "machine, machine_version, kind, state, configuration, context, status, version, "
    "resource_id, idempotency_key, wake_at, queue, priority, labels, lease_owner, lease_epoch"
)


def comparable(record: TransitionRecord) -> dict[str, Any]:
    return record.model_dump(exclude={"instance_id", "created_at"})


def counting(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each start's loop statement: True when it went from the loop."""
    seen: list[bool] = []
    statement = batching.RowBatcher.statement

    async def counted(self: Any, name: bytes, args: Any) -> Any:
        answer = await statement(self, name, args)
        if name == pg_start.START_STATEMENT:
            seen.append(answer is not None)
        return answer

    monkeypatch.setattr(batching.RowBatcher, "statement", counted)
    return seen


async def warmed(engine: durable.WorkflowEngine) -> None:
    """Wait until the loop connection the warm-up run opened is idle: under load the
    warm run's last rows can go the thread's way while it opens, or it can still be
    answering one when the next start looks for a free one (and takes the thread)."""
    batcher = engine.executor.host.batcher
    for _ in range(1000):
        if batcher._idle and not batcher._in_flight:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the warm-up run left no idle loop connection within 5 s")


def instance_rows(schema: str, ids: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(PG_URL)) as conn:
        return [
            conn.execute(
                f"SELECT {INSTANCE_COLUMNS}, created_at <= updated_at, lease_expires_at, "
                f'clock_timestamp() FROM "{schema}".statewf_instances WHERE id = %s',
                [run_id],
            ).fetchone()
            or ()
            for run_id in ids
        ]


def test_a_start_from_the_loop_writes_what_the_transaction_writes(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    seen = counting(monkeypatch)
    store = statewf.Engine(PG_URL, schema=pg_schema)
    labels = {"region": "eu"}

    async def main() -> tuple[str, str]:
        async with durable.WorkflowEngine(store, workflows=[held, quick], lease=60) as engine:
            warm = await engine.start_workflow(quick, 1)  # opens the loop connection
            await engine.wait_for_run(warm.id, timeout=30)
            await warmed(engine)
            seen.clear()
            kw: dict[str, Any] = {"resource_id": "tenant", "priority": 3, "labels": labels}
            looped = await engine.start_workflow(held, INPUT, idempotency_key="k1", **kw)
            with monkeypatch.context() as m:  # the transaction's path
                m.setattr(pg_start, "start_args", lambda *a: None)
                threaded = await engine.start_workflow(held, INPUT, idempotency_key="k2", **kw)
            for run in (looped, threaded):
                while (await engine.get_run(run.id)).status != "waiting":
                    await asyncio.sleep(0.01)
            return looped.id, threaded.id

    try:
        looped, threaded = asyncio.run(main())
        a, b = instance_rows(pg_schema, [looped, threaded])
        logs = [store.history(looped), store.history(threaded)]
    finally:
        store.close()
    assert seen == [True]  # the second start took the transaction
    # instance rows alike but for the key (and the lease's time, released on waiting)
    assert a[:9] == b[:9]
    assert a[10:-3] == b[10:-3]
    assert (a[9], b[9]) == ("k1", "k2")
    creates = [comparable(log[0]) for log in logs]
    assert creates[0]["meta"].pop("idempotency_key") == "k1"
    assert creates[1]["meta"].pop("idempotency_key") == "k2"
    assert creates[0] == creates[1]
    assert [comparable(r) for r in logs[0][1:]] == [comparable(r) for r in logs[1][1:]]


def test_the_lease_of_a_loop_start_is_on_the_database_clock(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    seen = counting(monkeypatch)
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> tuple[Any, ...]:
        async with durable.WorkflowEngine(store, workflows=[slow, quick], lease=45.5) as engine:
            warm = await engine.start_workflow(quick, 1)
            await engine.wait_for_run(warm.id, timeout=30)
            await warmed(engine)
            seen.clear()
            run = await engine.start_workflow(slow)
            executor = engine.executor.running[run.id]
            assert executor.lease is not None
            stored = instance_rows(pg_schema, [run.id])[0]  # while its step naps
            done = await engine.wait_for_run(run.id, timeout=30)
            assert done.output == "rested"
            return stored, executor.lease.expires_at, engine.worker_id

    try:
        stored, held_until, worker = asyncio.run(main())
    finally:
        store.close()
    assert seen == [True]
    expires, now = stored[-2], stored[-1]
    assert expires == held_until  # what the engine holds is what the row says
    assert timedelta(seconds=40) < expires - now <= timedelta(seconds=45.5)
    assert stored[14:16] == (worker, 1)  # lease_owner, lease_epoch


def test_a_taken_key_or_id_is_answered_as_before(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    seen = counting(monkeypatch)
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> None:
        async with durable.WorkflowEngine(store, workflows=[quick]) as engine:
            first = await engine.start_workflow(quick, 1, idempotency_key="once")
            await engine.wait_for_run(first.id, timeout=30)
            again = await engine.start_workflow(quick, 2, idempotency_key="once")
            assert again.id == first.id
            with pytest.raises(statewf.DuplicateInstance):
                await engine.start_workflow(quick, 3, run_id=first.id)
            with pytest.raises(statewf.InvalidInput):  # the key is another resource's
                await engine.start_workflow(quick, 4, idempotency_key="once", resource_id="r")
            assert len(engine.engine.history(first.id)) == 3  # create, step, completed

    try:
        asyncio.run(main())
    finally:
        store.close()
    assert seen[1:] == [True, True, True]  # each from the loop, then the transaction


def test_a_start_after_the_loop_connection_died_still_starts(pg_schema: str) -> None:
    require_postgres()
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> list[Any]:
        async with durable.WorkflowEngine(store, workflows=[quick]) as engine:
            warm = await engine.start_workflow(quick, 1)
            await engine.wait_for_run(warm.id, timeout=30)
            await warmed(engine)
            batcher = engine.executor.host.batcher
            for _ in range(300):  # opened in a thread, after the first row asked for it
                if batcher.connections:
                    break
                await asyncio.sleep(0.01)
            pids = [c.backend_pid for c in batcher.connections]
            assert pids
            with psycopg.connect(libpq(PG_URL), autocommit=True) as admin:
                for pid in pids:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await asyncio.sleep(0.3)  # the loop sees the socket close
            outputs = []
            for i in range(3):
                run = await engine.start_workflow(quick, i)
                outputs.append((await engine.wait_for_run(run.id, timeout=30)).output)
            return outputs

    try:
        assert asyncio.run(main()) == [0, 1, 2]
    finally:
        store.close()


def test_a_statement_on_its_way_when_the_engine_closes_is_answered(pg_schema: str) -> None:
    require_postgres()
    from statewf.store import batched

    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> Any:
        async with durable.WorkflowEngine(store, workflows=[quick]) as engine:
            warm = await engine.start_workflow(quick, 1)
            await engine.wait_for_run(warm.id, timeout=30)
            await warmed(engine)
            batcher = engine.executor.host.batcher
            for _ in range(300):
                if batcher.connections:
                    break
                await asyncio.sleep(0.01)
            # a harmless statement (no rows), closed under before its answer is read
            task = asyncio.ensure_future(batcher.statement(batched.ROWS_STATEMENT, [b"[]"]))
            await asyncio.sleep(0)
            batcher.close()
            return await asyncio.wait_for(task, 10)

    try:
        result, error = asyncio.run(main())
        with pytest.raises(statewf.StoreError):
            pg_start.started(store.store, result, error)
    finally:
        store.close()
    assert result is None
    assert isinstance(error, ConnectionError)


def test_a_start_whose_commit_fails_is_not_reported_started(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred constraint fails at commit, after the statement's rows came back: the
    start is refused (as the transaction's path refuses it), not reported started."""
    require_postgres()
    seen = counting(monkeypatch)
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> str | None:
        async with durable.WorkflowEngine(store, workflows=[quick]) as engine:
            warm = await engine.start_workflow(quick, 1)
            await engine.wait_for_run(warm.id, timeout=30)
            await warmed(engine)
            with psycopg.connect(libpq(PG_URL), autocommit=True) as admin:
                admin.execute(f'CREATE TABLE "{pg_schema}".tenants (id TEXT PRIMARY KEY)')
                admin.execute(
                    f'ALTER TABLE "{pg_schema}".statewf_instances ADD CONSTRAINT tenant '
                    f'FOREIGN KEY (resource_id) REFERENCES "{pg_schema}".tenants (id) '
                    "DEFERRABLE INITIALLY DEFERRED"
                )
            seen.clear()
            try:
                run = await engine.start_workflow(quick, 2, run_id="stray", resource_id="nobody")
            except statewf.StoreError:
                return None
            return run.id

    try:
        started = asyncio.run(main())
        with psycopg.connect(libpq(PG_URL)) as conn:
            stored = conn.execute(
                f"SELECT count(*) FROM \"{pg_schema}\".statewf_instances WHERE id = 'stray'"
            ).fetchone()
    finally:
        store.close()
    assert seen == [True]  # the loop's statement was sent
    assert stored == (0,)
    assert started is None  # refused, not a run that does not exist


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-sent"])
@pytest.mark.parametrize("key", [None, "order-7"])
def test_a_start_whose_connection_is_lost_under_it_runs_once(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch, committed: bool, key: str | None
) -> None:
    """The loop connection goes under the start's statement, before or after it
    committed: the start is not reported failed for a run that is there, nor inserted
    twice; the run executes once, by this engine."""
    require_postgres()
    statement = batching.RowBatcher.statement
    lost: list[bytes] = []

    async def lose(self: Any, name: bytes, args: Any) -> Any:
        if name != pg_start.START_STATEMENT or lost:
            return await statement(self, name, args)
        lost.append(name)
        if committed:
            assert await statement(self, name, args) is not None  # it ran, it committed
        return None, psycopg.OperationalError("server closed the connection unexpectedly")

    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> tuple[Any, Any]:
        async with durable.WorkflowEngine(store, workflows=[quick]) as engine:
            warm = await engine.start_workflow(quick, 0)
            await engine.wait_for_run(warm.id, timeout=30)
            await warmed(engine)
            monkeypatch.setattr(batching.RowBatcher, "statement", lose)
            run = await engine.start_workflow(quick, 5, idempotency_key=key)
            done = await engine.wait_for_run(run.id, timeout=30)
            again = await engine.start_workflow(quick, 5, idempotency_key=key) if key else None
            return done, again

    try:
        done, again = asyncio.run(main())
        assert lost == [pg_start.START_STATEMENT]
        assert done.status == "completed"
        assert done.output == 5
        if again is not None:
            assert again.id == done.id  # the key names the one run
        log = store.history(done.id)
        kinds = [r.kind for r in log]
        assert kinds.count("create") == 1
        assert kinds.count("step") == 1
    finally:
        store.close()
