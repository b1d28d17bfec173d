"""Step rows sent from the event loop (PostgreSQL): no thread between a run and its row.

What a run writes this way equals what the thread path writes; the connection's loss,
while a row is on its way or while it is idle, costs a retried write at most, never a
step run twice or a row written twice; a wrapped ``write_if_version`` is honoured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import durable
import statewf
from statewf.records import TransitionRecord
from tests.conftest import PG_URL, require_postgres

pytestmark = pytest.mark.postgres


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def kill(pids: list[int]) -> None:
    with psycopg.connect(libpq(PG_URL), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def story(steps: int, hook: Callable[[int], None] | None = None) -> durable.Workflow[Any, Any]:
    """A run of ``steps`` steps with documents worth comparing; ``hook(i)`` before step i."""

    async def step(i: int) -> dict[str, Any]:
        if hook is not None:
            hook(i)
        return {"z": i, "a": [1.5, None, "é☃"], "m": {"y": True, "b": 1e-7}}

    @durable.workflow(f"story-{steps}")
    async def wf(ctx: durable.Context[Any]) -> list[Any]:
        return [await ctx.step.run(f"s{i}", step, i) for i in range(steps)]

    return wf


def comparable(rows: list[TransitionRecord]) -> list[dict[str, Any]]:
    drop = {"instance_id", "created_at"}
    out = []
    for row in rows:
        fields = row.model_dump(exclude=drop)
        meta = dict(fields["meta"])
        for timing in ("started_at", "duration_ms"):
            meta.pop(timing, None)
        fields["meta"] = meta
        out.append(fields)
    return out


def run_story(
    schema: str, steps: int, *, wrap: bool = False
) -> tuple[list[TransitionRecord], int, int]:
    """One run after a warm-up run; its log, and how many of its batches went from the
    loop, and in all."""
    wf, warmup = story(steps), story(1)
    store = statewf.Engine(PG_URL, schema=schema)

    async def main() -> tuple[str, int, int]:
        async with durable.WorkflowEngine(store, workflows=[wf, warmup]) as engine:
            if wrap:  # an application's instrumentation around the store's write
                own = store.store.write_if_version

                def counted(*args: Any, **kwargs: Any) -> bool:
                    return own(*args, **kwargs)

                store.store.write_if_version = counted  # type: ignore[method-assign]
            warm = await engine.start_workflow(warmup)  # opens the loop connection
            await engine.wait_for_run(warm.id, timeout=30)
            batcher = engine.executor.host.batcher
            loop0, all0 = batcher.loop_batches, batcher.batches
            run = await engine.start_workflow(wf)
            done = await engine.wait_for_run(run.id, timeout=60)
            assert done.status == "completed", done
            return run.id, batcher.loop_batches - loop0, batcher.batches - all0

    run_id, from_loop, batches = asyncio.run(main())
    log = store.history(run_id)
    store.close()
    return log, from_loop, batches


def test_a_lone_run_writes_from_the_loop_what_the_thread_path_writes(pg_schema: str) -> None:
    require_postgres()
    loop_log, from_loop, batches = run_story(pg_schema, 6)
    thread_log, from_loop_wrapped, _ = run_story(pg_schema, 6, wrap=True)
    assert from_loop == batches == 7  # six steps and the completed row
    assert from_loop_wrapped == 0  # a wrapped write_if_version is what writes
    assert [r.seq for r in loop_log] == list(range(1, 9))  # create, 6 steps, completed
    assert comparable(loop_log) == comparable(thread_log)


def test_many_runs_share_loop_commits_and_each_log_is_intact(pg_schema: str) -> None:
    require_postgres()

    async def double(i: int) -> int:
        return 2 * i

    @durable.workflow("many")
    async def many(ctx: durable.Context[Any]) -> int:
        return sum([await ctx.step.run(f"s{i}", double, i) for i in range(6)])

    async def main() -> tuple[list[Any], int, int, list[list[int]]]:
        async with durable.WorkflowEngine(PG_URL, schema=pg_schema, workflows=[many]) as eng:
            runs = await asyncio.gather(*[eng.start_workflow("many") for _ in range(30)])
            done = [await eng.wait_for_run(r.id, timeout=60) for r in runs]
            batcher = eng.executor.host.batcher
            seqs = [[row.seq for row in eng.engine.history(r.id)] for r in runs]
            return [d.output for d in done], batcher.loop_batches, batcher.rows, seqs

    outputs, from_loop, rows, seqs = asyncio.run(main())
    assert outputs == [30] * 30
    assert 0 < from_loop < rows  # from the loop, several rows per batch
    for log in seqs:
        assert log == list(range(1, 9))


def test_a_connection_lost_under_a_row_costs_a_retry_not_a_second_row(pg_schema: str) -> None:
    require_postgres()
    calls: dict[int, int] = {}
    pids: list[int] = []

    def hook(i: int) -> None:
        calls[i] = calls.get(i, 0) + 1
        if i == 3 and calls[i] == 1:
            # the loop connection dies as the step ends: its row is sent at once, in
            # the same turn of the loop, and finds the connection dying or dead
            kill(pids)

    wf, warmup = story(6, hook), story(2)
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> str:
        async with durable.WorkflowEngine(store, workflows=[wf, warmup]) as engine:
            warm = await engine.start_workflow(warmup)  # opens the loop connection
            await engine.wait_for_run(warm.id, timeout=30)
            pids.extend(c.backend_pid for c in engine.executor.host.batcher.connections)
            assert pids
            run = await engine.start_workflow(wf)
            done = await engine.wait_for_run(run.id, timeout=60)
            assert done.status == "completed", done
            return run.id

    try:
        run_id = asyncio.run(main())
        log = store.history(run_id)
    finally:
        store.close()
    positions = [int(r.meta["position"]) for r in log if r.kind == "step"]
    assert positions == list(range(6))  # each step's row once
    assert all(n == 1 for n in calls.values())  # no step ran twice


def test_an_idle_connection_closed_by_the_server_is_replaced(pg_schema: str) -> None:
    require_postgres()
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> tuple[list[Any], int]:
        async with durable.WorkflowEngine(store, workflows=[story(3)]) as engine:
            first = await engine.start_workflow("story-3")
            await engine.wait_for_run(first.id, timeout=30)
            batcher = engine.executor.host.batcher
            old = [c.backend_pid for c in batcher.connections]
            assert old
            kill(old)
            await asyncio.sleep(0.3)  # the loop sees the socket close
            second = await engine.start_workflow("story-3")
            done = await engine.wait_for_run(second.id, timeout=30)
            # the replacement is opened in a thread while the rows go the thread's way:
            # under load the run can end before it lands
            for _ in range(500):
                if batcher.connections:
                    break
                await asyncio.sleep(0.01)
            new = [c.backend_pid for c in batcher.connections]
            return [done.status, set(old) & set(new)], len(new)

    try:
        (status, kept), count = asyncio.run(main())
    finally:
        store.close()
    assert status == "completed"
    assert kept == set()  # the dead connection is gone
    assert count >= 1  # and a fresh one took its place


def test_an_engine_reopened_on_a_new_loop_writes_again(pg_schema: str) -> None:
    require_postgres()
    store = statewf.Engine(PG_URL, schema=pg_schema)
    wf = story(2)

    async def main() -> str:
        async with durable.WorkflowEngine(store, workflows=[wf]) as engine:
            run = await engine.start_workflow(wf)
            return (await engine.wait_for_run(run.id, timeout=30)).status

    try:
        assert [asyncio.run(main()) for _ in range(2)] == ["completed"] * 2
    finally:
        store.close()


class _NoReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch sockets, as Windows' proactor loop cannot."""

    def add_reader(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


def test_a_loop_that_cannot_watch_sockets_writes_through_threads(pg_schema: str) -> None:
    require_postgres()
    store = statewf.Engine(PG_URL, schema=pg_schema)
    wf = story(4)

    async def main() -> tuple[str, int, int, int]:
        async with durable.WorkflowEngine(store, workflows=[wf]) as engine:
            statuses = []
            for _ in range(2):
                run = await engine.start_workflow(wf)
                statuses.append((await engine.wait_for_run(run.id, timeout=30)).status)
            batcher = engine.executor.host.batcher
            assert statuses == ["completed"] * 2
            return statuses[0], batcher.loop_batches, batcher.batches, len(batcher.connections)

    try:
        with asyncio.Runner(loop_factory=_NoReaders) as runner:
            status, from_loop, batches, kept = runner.run(main())
        fast = store.store.fast_path
        assert fast is not None
        assert fast.engine.pool.checkedout() == len(fast.idle)  # nothing held elsewhere
    finally:
        store.close()
    assert (status, from_loop, kept) == ("completed", 0, 0)
    assert batches == 10  # every row written, through the threads


def test_a_rows_loop_arguments_are_the_conditional_writes_text(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    from durable.execution import batching
    from statewf.store import prebuilt

    rows: list[Any] = []
    write = batching.RowBatcher.write

    async def kept(self: Any, row: Any) -> bool:
        rows.append(row)
        return await write(self, row)

    monkeypatch.setattr(batching.RowBatcher, "write", kept)
    log, _, _ = run_story(pg_schema, 3)
    assert [r.seq for r in log] == [1, 2, 3, 4, 5]
    store = statewf.Engine(PG_URL, schema=pg_schema)
    try:
        prepared = store.store.prepared_write
        assert prepared is not None
        nul = rows[1]._replace(record=rows[1].record.model_copy(update={"key": "a\x00b"}))
        for row in [*rows, nul]:
            params = prebuilt.conditional_params(
                row.snapshot, row.record, row.expected_version, row.release
            )
            args = prepared.row_args(row.snapshot, row.record, row.expected_version, row.release)
            assert args == prepared.args(params)
        assert (
            prepared.args(prebuilt.conditional_params(nul.snapshot, nul.record, 1, False)) is None
        )
        assert rows[-1].release  # the completed row gives up the lease
    finally:
        store.close()
    assert len(rows) == 2 + 4  # the warm-up's step and final row; three steps and the final


def test_a_row_whose_commit_fails_is_not_taken_as_written(pg_schema: str) -> None:
    """A deferred constraint refuses a step's row at commit, after the statement's rows
    came back: the run does not go on as if the row were in the log (it would end
    completed with that step's row missing)."""
    require_postgres()
    wf, warmup = story(3), story(1)
    store = statewf.Engine(PG_URL, schema=pg_schema)

    async def main() -> tuple[str, Any]:
        async with durable.WorkflowEngine(store, workflows=[wf, warmup]) as engine:
            warm = await engine.start_workflow(warmup)  # opens the loop connection
            await engine.wait_for_run(warm.id, timeout=30)
            with psycopg.connect(libpq(PG_URL), autocommit=True) as admin:
                admin.execute(
                    f'CREATE FUNCTION "{pg_schema}".refuse() RETURNS trigger LANGUAGE plpgsql '
                    "AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"
                )
                admin.execute(
                    f'CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON "{pg_schema}".'
                    "statewf_transitions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                    f"WHEN (NEW.key = 's1' AND NEW.kind = 'step') "
                    f'EXECUTE FUNCTION "{pg_schema}".refuse()'
                )
            run = await engine.start_workflow(wf)
            try:
                outcome: Any = await engine.wait_for_run(run.id, timeout=5)
            except Exception as exc:  # the row is refused each time the step runs again
                outcome = exc
            return run.id, outcome

    try:
        run_id, outcome = asyncio.run(main())
        log = store.history(run_id)
    finally:
        store.close()
    steps = [row.key for row in log if row.kind == "step"]
    assert "s1" not in steps  # the trigger refused it
    assert "completed" not in [row.kind for row in log], (outcome, steps)
