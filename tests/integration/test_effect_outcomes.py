"""Effect outcomes written in batches: one commit for many, durable before anything reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import statewf
from statewf.store.effects import EffectOutcome
from statewf.testing import ManualClock
from tests.conftest import PG_URL, tracked

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import outcome_sender  # noqa: E402

RAN: list[statewf.EffectCall] = []


@statewf.effect
def ping(call: statewf.EffectCall) -> None:
    RAN.append(call)


PINGER = statewf.Machine(
    "pinger",
    initial="a",
    states={"a": statewf.State(on={"PING": statewf.transition(internal=True, action=ping)})},
)


def engine_for(db: dict[str, Any], *machines: statewf.Machine, **kw: Any) -> statewf.Engine:
    engine = tracked(statewf.Engine(**db, **kw))
    engine.register(*machines)
    return engine


def raw_effects(engine: statewf.Engine) -> list[Any]:
    """The outbox rows as the database holds them (no engine read, so nothing flushed)."""
    with engine.store.engine.connect() as conn:
        return list(conn.execute(sa.select(engine.store.tables.effects).order_by("id")).all())


def test_outcomes_of_many_effects_are_written_in_one_commit(pg_schema: str) -> None:
    engine = engine_for({"url": PG_URL, "schema": pg_schema}, PINGER, effect_outcome_delay=10)
    inst = engine.create(PINGER)
    RAN.clear()
    for _ in range(20):
        engine.send(inst.id, "PING")
    assert len(RAN) == 20
    # the sends wrote their rows claimed and ran them; no outcome written yet
    assert {(r.status, r.attempts) for r in raw_effects(engine)} == {("pending", 1)}
    assert {e.status for e in engine.effects()} == {"done"}  # the read writes them first
    with engine.store.engine.connect() as conn:
        # the transaction that last wrote each row, as the server records it
        writers = conn.execute(
            sa.text(f'SELECT count(DISTINCT xmin::text) FROM "{pg_schema}".statewf_effects')
        ).scalar()
    assert writers == 1
    assert engine.outbox.outcomes.batches == 1


def test_outbox_reads_write_the_queued_outcomes_first(db: dict[str, Any]) -> None:
    clock = ManualClock()
    engine = engine_for(db, PINGER, clock=clock, effect_outcome_delay=10)
    inst = engine.create(PINGER)
    engine.send(inst.id, "PING")
    [row] = raw_effects(engine)
    assert (row.status, row.attempts, row.done_at) == ("pending", 1, None)
    assert engine.dispatch_effects() == 0  # leased to this process, and written first
    [effect] = engine.effects(instance_id=inst.id)
    assert (effect.status, effect.attempts) == ("done", 1)
    [row] = raw_effects(engine)
    assert row.status == "done"
    clock.advance(timedelta(minutes=5))
    assert engine.dispatch_effects() == 0  # done: never again


def test_close_writes_the_queued_outcomes(db: dict[str, Any]) -> None:
    engine = engine_for(db, PINGER, effect_outcome_delay=10)
    inst = engine.create(PINGER)
    engine.send(inst.id, "PING")
    engine.send(inst.id, "PING")
    engine.close()
    again = engine_for(db, PINGER)
    assert [e.status for e in again.effects(instance_id=inst.id)] == ["done", "done"]


def test_the_background_writer_writes_them_without_any_read(db: dict[str, Any]) -> None:
    engine = engine_for(db, PINGER, effect_outcome_delay=0.01)
    inst = engine.create(PINGER)
    engine.send(inst.id, "PING")
    outcomes = engine.outbox.outcomes
    thread = outcomes._thread
    if thread is not None:
        thread.join(timeout=30)  # it ends once nothing is queued
    assert outcomes.pending() == 0
    assert [r.status for r in raw_effects(engine)] == ["done"]


def sender(db: dict[str, Any], how: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(HERE / "outcome_sender.py"), str(db["url"]), db["schema"] or "-", how],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ran "), proc.stdout
    assert lines[0].endswith(" attempt 1"), proc.stdout
    return lines[1].removeprefix("sent ")


def test_a_process_dying_before_the_outcome_is_written_runs_the_effect_again(
    db: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    instance_id = sender(db, "crash")
    clock = ManualClock(datetime.now(UTC))  # the sender's lease is on the real clock
    engine = engine_for(db, outcome_sender.MACHINE, clock=clock)
    [effect] = engine.effects(instance_id=instance_id)
    assert (effect.status, effect.attempts) == ("pending", 1)  # leased to the dead process
    assert engine.dispatch_effects() == 0
    capfd.readouterr()
    clock.advance(timedelta(seconds=61))  # the lease (60 s) ran out
    assert engine.dispatch_effects() == 1
    assert capfd.readouterr().out.strip() == f"ran {instance_id}:2:0 attempt 2"  # same key
    [effect] = engine.effects(instance_id=instance_id)
    assert (effect.status, effect.attempts) == ("done", 2)


def test_an_engine_left_open_writes_its_outcomes_at_exit(db: dict[str, Any]) -> None:
    instance_id = sender(db, "exit")
    clock = ManualClock(datetime.now(UTC))
    engine = engine_for(db, outcome_sender.MACHINE, clock=clock)
    [effect] = engine.effects(instance_id=instance_id)
    assert (effect.status, effect.attempts) == ("done", 1)
    clock.advance(timedelta(minutes=5))
    assert engine.dispatch_effects() == 0


def test_outcomes_of_every_kind_in_one_batch(db: dict[str, Any]) -> None:
    clock = ManualClock()
    engine = engine_for(db, PINGER, clock=clock, dispatch_effects=False)
    inst = engine.create(PINGER)
    for _ in range(5):
        engine.send(inst.id, "PING")
    now = clock.now()
    with engine.store.transaction() as tx:
        claimed = tx.claim_effects(
            now, now + timedelta(seconds=60), limit=10, versions=[("pinger", "1")], max_attempts=10
        )
    done, retry, dead, late, superseded = (effect for effect, _ in claimed)
    with engine.store.transaction() as tx:  # a "presumed dead" mark a late success overrides
        tx.conn.execute(
            sa.update(engine.store.tables.effects)
            .where(engine.store.tables.effects.c.id == late.id)
            .values(status="dead")
        )
    at, retry_at = now + timedelta(seconds=1), now + timedelta(seconds=30)
    with engine.store.statement() as tx:
        written = tx.finish_effects(
            [
                EffectOutcome(done.id, 1, "done", at),
                EffectOutcome(retry.id, 1, "retry", retry_at, "E: again"),
                EffectOutcome(dead.id, 1, "dead", at, "E: gave up"),
                EffectOutcome(late.id, 1, "done", at),
                EffectOutcome(superseded.id, 0, "done", at),  # an earlier attempt's outcome
            ]
        )
    assert written == {done.id, retry.id, dead.id, late.id}
    rows = {e.id: e for e in engine.effects(instance_id=inst.id)}
    assert (rows[done.id].status, rows[done.id].done_at, rows[done.id].last_error) == (
        "done",
        at,
        None,
    )
    r = rows[retry.id]
    assert (r.status, r.available_at, r.last_error, r.done_at) == (
        "pending",
        retry_at,
        "E: again",
        None,
    )
    d = rows[dead.id]
    assert (d.status, d.done_at, d.last_error) == ("dead", at, "E: gave up")
    assert rows[late.id].status == "done"
    s = rows[superseded.id]
    assert (s.status, s.attempts, s.available_at) == ("pending", 1, now + timedelta(seconds=60))


def test_a_negative_or_lease_long_delay_is_refused(db: dict[str, Any]) -> None:
    with pytest.raises(statewf.InvalidInput):
        statewf.Engine(**db, effect_outcome_delay=-1)
    with pytest.raises(statewf.InvalidInput):
        statewf.Engine(**db, effect_outcome_delay=30)  # the lease is 60 s


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_its_parents_outcomes_to_the_parent(db: dict[str, Any]) -> None:
    engine = engine_for(db, PINGER, effect_outcome_delay=10)
    inst = engine.create(PINGER)
    engine.send(inst.id, "PING")
    assert engine.outbox.outcomes.pending() == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing queued, and no parent's thread to wait for
        os.write(write, str(engine.outbox.outcomes.pending()).encode())
        os._exit(0)
    os.close(write)
    assert os.read(read, 10) == b"0"
    os.close(read)
    os.waitpid(pid, 0)
    assert engine.outbox.outcomes.pending() == 1
    assert [e.status for e in engine.effects(instance_id=inst.id)] == ["done"]
