"""Several instances' conditional writes in one statement (PostgreSQL), and durable
runs sharing commits: what is persisted is what one-row writes persist, and each
writer learns its own row's fate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import durable
import statewf
from statewf.appending import next_row
from statewf.errors import StatewfError, StoreError
from statewf.records import Instance, TransitionRecord
from statewf.store.batched import Row, write_rows
from tests.conftest import PG_URL, require_postgres

pytestmark = pytest.mark.postgres

PING = statewf.Machine(
    "ping",
    initial="a",
    states={"a": statewf.State(on={"FLIP": "b"}), "b": statewf.State(on={"FLIP": "a"})},
)


@pytest.fixture
def engine(pg_schema: str) -> Iterator[statewf.Engine]:
    require_postgres()
    eng = statewf.Engine(
        f"{PG_URL}?application_name=statewf-batch-{uuid.uuid4().hex[:8]}", schema=pg_schema
    )
    eng.register(PING)
    yield eng
    eng.close()


def flip(snap: Instance, **fields: Any) -> tuple[TransitionRecord, Instance]:
    """The next row of a ping-pong instance, with whatever ``fields`` override."""
    target = ("b",) if snap.state == "a" else ("a",)
    row: dict[str, Any] = {
        "kind": "event",
        "event": "FLIP",
        "target": target,
        "status": snap.status,
    }
    row.update(fields)
    return next_row(snap, datetime.now(UTC), **row)


def stored(engine: statewf.Engine, instance_id: str) -> tuple[Instance, list[TransitionRecord]]:
    snap = engine.store.read_instance(instance_id)
    assert snap is not None
    with engine.store.transaction() as tx:
        return snap, tx.log(instance_id)


def test_a_batch_persists_exactly_what_one_row_writes_persist(engine: statewf.Engine) -> None:
    ours = [engine.create("ping").id for _ in range(3)]
    theirs = [engine.create("ping").id for _ in range(3)]
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    # documents whose key order, unicode, floats and nulls must come back as written
    payloads: list[Any] = [
        {"z": 1, "a": [1.5, None, "é☃"], "m": {"y": True, "b": 1e-7}},
        None,
        "just a string",
    ]
    rows = []
    for mine, other, payload in zip(ours, theirs, payloads, strict=True):
        extra = {"payload": payload, "wake_at": at, "context_set": {"k": payload}}
        rows.append((mine, other, extra))
    batch = []
    for mine, other, extra in rows:
        record, new = flip(engine.store.read_instance(mine), **extra)  # type: ignore[arg-type]
        batch.append(Row(new, record, new.version - 1))
        record2, new2 = flip(engine.store.read_instance(other), **extra)  # type: ignore[arg-type]
        assert engine.store.write_if_version(new2, record2, new2.version - 1)
    assert write_rows(engine.store, batch) == [True, True, True]
    for (mine, other, _), row in zip(rows, batch, strict=True):
        snap, log = stored(engine, mine)
        snap2, log2 = stored(engine, other)
        assert (snap.state, snap.version, snap.context, snap.wake_at) == (
            snap2.state,
            snap2.version,
            snap2.context,
            snap2.wake_at,
        )
        strip = {"instance_id", "created_at"}
        assert log[-1].model_dump(exclude=strip) == log2[-1].model_dump(exclude=strip)
        assert log[-1] == row.record
        assert list(log[-1].context_set) == list(row.record.context_set)  # key order kept


def test_a_row_whose_instance_moved_is_not_written_and_the_others_are(
    engine: statewf.Engine,
) -> None:
    ids = [engine.create("ping").id for _ in range(3)]
    snaps = [engine.store.read_instance(i) for i in ids]
    batch = [Row(new, rec, new.version - 1) for rec, new in (flip(s) for s in snaps if s)]
    engine.send(ids[1], "FLIP")  # the middle one moves under its writer
    assert write_rows(engine.store, batch) == [True, False, True]
    assert [len(stored(engine, i)[1]) for i in ids] == [2, 2, 2]  # created + one each
    assert stored(engine, ids[1])[1][-1].created_at != batch[1].record.created_at


def test_a_refused_row_fails_alone_and_the_others_land(engine: statewf.Engine) -> None:
    ids = [engine.create("ping").id for _ in range(3)]
    snaps = [engine.store.read_instance(i) for i in ids]
    batch = [Row(new, rec, new.version - 1) for rec, new in (flip(s) for s in snaps if s)]
    # the server refuses a NUL in a text column: the whole statement fails, then each
    # row goes on its own and only this one's writer gets the error
    bad_record, bad_new = flip(snaps[0], key="bad\u0000key")  # type: ignore[arg-type]
    batch[0] = Row(bad_new, bad_record, bad_new.version - 1)
    outcomes = write_rows(engine.store, batch)
    assert isinstance(outcomes[0], StatewfError)
    assert outcomes[1:] == [True, True]
    assert [stored(engine, i)[0].version for i in ids] == [1, 2, 2]


def test_a_final_row_in_a_batch_gives_up_the_lease(engine: statewf.Engine) -> None:
    ids = [engine.create("ping").id for _ in range(2)]
    with engine.store.transaction() as tx:
        for i in ids:
            tx.conn.execute(
                engine.store.tables.instances.update()
                .where(engine.store.tables.instances.c.id == i)
                .values(lease_owner="w1", lease_expires_at=datetime.now(UTC) + timedelta(hours=1))
            )
    snaps = [engine.store.read_instance(i) for i in ids]
    pairs = [flip(s) for s in snaps if s]
    batch = [Row(pairs[0][1], pairs[0][0], 1, release=True), Row(pairs[1][1], pairs[1][0], 1)]
    assert write_rows(engine.store, batch) == [True, True]
    with engine.store.transaction() as tx:
        c = engine.store.tables.instances.c
        leases = dict(
            tx.conn.execute(
                engine.store.tables.instances.select()
                .with_only_columns(c.id, c.lease_owner)
                .where(c.id.in_(ids))
            ).all()
        )
    assert leases == {ids[0]: None, ids[1]: "w1"}


def test_a_lost_connection_reaches_every_writer_of_the_batch_as_transient(
    engine: statewf.Engine,
) -> None:
    ids = [engine.create("ping").id for _ in range(3)]
    engine.send(ids[0], "FLIP")  # a kept fast-path connection now exists
    fast = engine.store.fast_path
    assert fast is not None
    assert fast.idle
    snaps = [engine.store.read_instance(i) for i in ids]
    batch = [Row(new, rec, new.version - 1) for rec, new in (flip(s) for s in snaps if s)]
    pids = [cur.connection.info.backend_pid for _, cur in fast.idle]
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    outcomes = write_rows(engine.store, batch)
    assert all(isinstance(o, StoreError) and o.transient for o in outcomes), outcomes
    # nothing was written, and the next batch works on fresh connections
    assert [stored(engine, i)[0].version for i in ids] == [2, 1, 1]
    assert write_rows(engine.store, batch) == [True, True, True]


def test_concurrent_runs_share_commits_and_each_log_is_intact(pg_schema: str) -> None:
    require_postgres()

    async def double(i: int) -> int:
        return 2 * i

    @durable.workflow("many-steps")
    async def many(ctx: durable.Context[Any]) -> int:
        total = 0
        for i in range(8):
            total += await ctx.step.run(f"s{i}", double, i)
        return total

    async def main() -> tuple[list[Any], int, int, list[list[int]]]:
        async with durable.WorkflowEngine(PG_URL, schema=pg_schema, workflows=[many]) as eng:
            runs = await asyncio.gather(*[eng.start_workflow("many-steps") for _ in range(40)])
            done = [await eng.wait_for_run(r.id, timeout=60) for r in runs]
            batcher = eng.executor.host.batcher
            seqs = [[row.seq for row in eng.engine.history(r.id)] for r in runs]
            return [d.output for d in done], batcher.rows, batcher.batches, seqs

    outputs, rows, batches, seqs = asyncio.run(main())
    assert outputs == [56] * 40
    assert rows >= 40 * 9  # 8 steps and the completed row of each run
    assert batches < rows  # rows went together
    for log in seqs:
        assert log == list(range(1, len(log) + 1))


def test_good_rows_go_in_one_statement_not_one_by_one(
    engine: statewf.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import statewf.store.batched as batched

    def one_by_one(*_args: Any) -> Any:
        raise AssertionError("the batch fell back to one-row writes")

    monkeypatch.setattr(batched, "_write_one", one_by_one)
    ids = [engine.create("ping").id for _ in range(4)]
    snaps = [engine.store.read_instance(i) for i in ids]
    batch = [Row(new, rec, new.version - 1) for rec, new in (flip(s) for s in snaps if s)]
    assert write_rows(engine.store, batch) == [True] * 4
