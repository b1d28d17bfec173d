"""Delayed machine transitions: durable, exactly once, cancelled by leaving the state."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import statewf
from statewf.testing import ManualClock
from tests.conftest import require_postgres, tracked
from tests.integration.timer_machines import START, expiring, skipping

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TICK = timedelta(microseconds=1)


def make(db: dict[str, Any], clock: ManualClock) -> statewf.Engine:
    engine = statewf.Engine(**db, clock=clock)
    tracked(engine)
    engine.register(expiring, skipping)
    return engine


def test_timer_fires_when_due_and_not_before(db: dict[str, Any]) -> None:
    clock = ManualClock(START)
    engine = make(db, clock)
    inst = engine.create(expiring)
    assert inst.wake_at == START + timedelta(days=1)
    clock.set(START + timedelta(days=1) - TICK)
    assert engine.fire_due_timers() == 0
    assert engine.get(inst.id).version == 1
    clock.advance(TICK)
    assert engine.fire_due_timers() == 1
    after = engine.get(inst.id)
    assert after.state == "waiting"
    assert after.context == {"reminders": 1}
    assert after.wake_at == START + timedelta(days=7)   # the other timer keeps running
    clock.set(START + timedelta(days=7))
    assert engine.fire_due_timers() == 1
    final = engine.get(inst.id)
    assert (final.state, final.status, final.wake_at) == ("expired", "final", None)
    kinds = [(r.kind, r.event) for r in engine.history(inst.id)]
    assert kinds == [("create", None), ("timer", "after 1 day"), ("timer", "after 7 days")]
    assert engine.replay(inst.id) == final
    assert engine.fire_due_timers() == 0


def test_a_late_scheduler_fires_each_due_timer_once_in_order(db: dict[str, Any]) -> None:
    clock = ManualClock(START)
    engine = make(db, clock)
    inst = engine.create(expiring)
    clock.advance(timedelta(days=30))   # every process was down for a month
    assert engine.fire_due_timers() == 1
    assert engine.fire_due_timers() == 1
    assert engine.fire_due_timers() == 0
    assert [r.event for r in engine.history(inst.id)][1:] == ["after 1 day", "after 7 days"]


def test_leaving_the_state_cancels_its_timers(db: dict[str, Any]) -> None:
    clock = ManualClock(START)
    engine = make(db, clock)
    inst = engine.create(expiring)
    clock.advance(timedelta(hours=5))
    paid = engine.send(inst.id, "PAY")
    assert paid.wake_at is None
    clock.advance(timedelta(days=10))
    assert engine.fire_due_timers() == 0
    assert engine.get(inst.id).state == "paid"
    # re-entering the state starts its timers again, counted from the re-entry
    back = engine.send(inst.id, "REFUND")
    assert back.wake_at == clock.now() + timedelta(days=1)


def test_internal_events_keep_the_timer(db: dict[str, Any]) -> None:
    clock = ManualClock(START)
    engine = make(db, clock)
    inst = engine.create(expiring)
    clock.advance(timedelta(hours=3))
    assert engine.send(inst.id, "POKE").wake_at == START + timedelta(days=1)


def test_timers_cannot_be_sent_as_events(db: dict[str, Any]) -> None:
    engine = make(db, ManualClock(START))
    inst = engine.create(expiring)
    with pytest.raises(statewf.UnknownEvent):
        engine.send(inst.id, "after 7 days")
    assert "after 7 days" not in engine.allowed_events(inst.id)


def test_guard_false_or_failing_action_skips_to_the_next_timer(db: dict[str, Any]) -> None:
    clock = ManualClock(START)
    engine = make(db, clock)
    inst = engine.create(skipping)
    clock.advance(timedelta(hours=1))
    assert engine.fire_due_timers() == 1
    clock.advance(timedelta(hours=1))
    assert engine.fire_due_timers() == 1
    mid = engine.get(inst.id)
    assert (mid.state, mid.wake_at) == ("a", START + timedelta(hours=3))
    clock.advance(timedelta(hours=1))
    assert engine.fire_due_timers() == 1
    assert engine.get(inst.id).state == "c"
    rows = engine.history(inst.id)
    assert rows[1].meta == {"timer": "after 1 hour", "skipped": True}
    assert rows[2].meta["skipped"] is True
    assert "RuntimeError: boom" in rows[2].meta["error"]
    assert engine.replay(inst.id) == engine.get(inst.id)


def test_timers_survive_a_restart_in_another_process(db: dict[str, Any]) -> None:
    url, schema = str(db["url"]), db["schema"] or ""
    script = str(HERE / "timer_machines.py")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    created = subprocess.run([sys.executable, script, url, schema, "create", "3"],
                             capture_output=True, text=True, check=True, env=env, timeout=60)
    ids = created.stdout.split()
    when = (START + timedelta(days=8)).isoformat()
    fired = subprocess.run([sys.executable, script, url, schema, "fire", when],
                           capture_output=True, text=True, check=True, env=env, timeout=60)
    assert int(fired.stdout) == 6
    engine = make(db, ManualClock(START + timedelta(days=8)))
    assert {engine.get(i).state for i in ids} == {"expired"}


def test_two_schedulers_fire_every_timer_exactly_once(pg_schema: str) -> None:
    require_postgres()
    from tests.conftest import PG_URL

    script = str(HERE / "timer_machines.py")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    created = subprocess.run([sys.executable, script, PG_URL, pg_schema, "create", "40"],
                             capture_output=True, text=True, check=True, env=env, timeout=60)
    ids = created.stdout.split()
    when = (START + timedelta(days=8)).isoformat()
    procs = [subprocess.Popen([sys.executable, script, PG_URL, pg_schema, "fire", when],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    totals = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(totals) == 80          # two timers for each of 40 instances, no more
    engine = statewf.Engine(PG_URL, schema=pg_schema, clock=ManualClock(START))
    tracked(engine)
    engine.register(expiring)
    for instance_id in ids:
        events = [r.event for r in engine.history(instance_id)]
        assert events == [None, "after 1 day", "after 7 days"]


def test_run_timers_loop_stops(db: dict[str, Any]) -> None:
    clock = ManualClock(START + timedelta(days=2))
    engine = make(db, clock)
    engine.create(expiring)
    stop = threading.Event()
    engine.run_timers(poll_interval=0.01, stop=stop, max_batches=3)
    assert engine.list(machine="expiring").items[0].context == {}   # created after the clock
    assert engine.next_wake_at() == START + timedelta(days=3)


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (statewf.State(after={"soon": "b"}), "cannot read 'soon' as a duration"),
        (statewf.State(after={"1h": "nowhere"}), "targets unknown state 'nowhere'"),
        (statewf.State(timeout="1h"), "timeout and on_timeout go together"),
        (statewf.State(after={-5: "b"}), "cannot be negative"),
    ],
)
def test_bad_delayed_transitions_are_spec_errors(state: statewf.State, problem: str) -> None:
    with pytest.raises(statewf.SpecError, match=problem):
        statewf.Machine("bad", initial="a", states={"a": state, "b": statewf.State(final=True)})


def test_final_states_cannot_have_timers() -> None:
    with pytest.raises(statewf.SpecError, match="cannot have delayed transitions"):
        statewf.Machine("bad", initial="a", states={
            "a": statewf.State(on={"GO": "b"}),
            "b": statewf.State(final=True, after={"1h": "a"}),
        })
