"""Statecharts on the engine, on both stores: one row per outside event, durable chart state.

The configuration, history values and pending timers are stored in the instance row
and in every log row, so a new engine (a restart) continues exactly where the last one
stopped; a macrostep that does not settle writes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from db_snapshot import dump_tables

import statewf
from examples.order_statechart import order
from statewf.testing import ManualClock
from tests.conftest import tracked

S = statewf.State


def test_order_chart_survives_a_restart_with_its_history_and_timers(db: dict[str, Any]) -> None:
    clock = ManualClock()
    first = tracked(statewf.Engine(**db, clock=clock))
    first.register(order)
    inst = first.create("order", context={"order_id": "A"})
    inst = first.send(inst.id, "CONFIRM")
    inst = first.send(inst.id, "PAID")
    inst = first.send(inst.id, "HOLD")
    assert [r.kind for r in first.history(inst.id)] == ["create", "event", "event", "event"]
    first.close()

    second = tracked(statewf.Engine(**db, clock=clock))  # a new process, same database
    second.register(order)
    held = second.get(inst.id)
    assert held.history == {
        "open.resume": ("open.processing.payment.paid", "open.processing.shipping.picking")
    }
    assert held.timers == ()  # picking's "after 2 days" was cancelled when it was left
    inst = second.send(inst.id, "RELEASE")
    assert inst.configuration == (
        "open.processing.payment.paid",
        "open.processing.shipping.picking",
    )
    assert [t.label for t in inst.timers] == ["after 2 days"]
    clock.advance(timedelta(days=2, seconds=1))
    assert second.fire_due_timers() == 1
    late = second.get(inst.id)
    assert late.configuration[1] == "open.processing.shipping.late"
    assert late.wake_at is None
    log = second.history(inst.id)
    assert log[-1].kind == "timer"
    assert log[-1].meta["microsteps"][0]["transitions"][0]["event"] == "after 2 days"
    for record in log:
        assert second.state_at(inst.id, record.seq) == statewf.fold.fold(log[: record.seq])
    assert second.replay(inst.id) == late


def test_a_due_timer_fires_before_the_next_event_in_its_transaction(db: dict[str, Any]) -> None:
    clock = ManualClock()
    engine = tracked(statewf.Engine(**db, clock=clock))
    engine.register(order)
    inst = engine.create("order", context={"order_id": "A"})
    engine.send(inst.id, "CONFIRM")
    clock.advance(timedelta(days=3))  # no scheduler ran
    inst = engine.send(inst.id, "PICKED")  # decided as if the timer had fired on time
    kinds = [r.kind for r in engine.history(inst.id)]
    assert kinds[-2:] == ["timer", "event"]
    assert inst.configuration[1] == "open.processing.shipping.packing"


def test_a_macrostep_that_does_not_settle_writes_nothing(db: dict[str, Any]) -> None:
    looping = statewf.Machine(
        "looping",
        initial="idle",
        states={
            "idle": S(on={"GO": "ping"}),
            "ping": S(always="pong"),
            "pong": S(always="ping"),
        },
    )
    engine = tracked(statewf.Engine(**db, clock=ManualClock()))
    engine.register(looping)
    inst = engine.create("looping")
    before = dump_tables(engine)
    with pytest.raises(statewf.MacrostepLimit, match="did not settle") as caught:
        engine.send(inst.id, "GO")
    assert caught.value.instance_id == inst.id
    assert dump_tables(engine) == before


def test_delayed_sends_are_durable_and_cancellable(db: dict[str, Any]) -> None:
    reminders = statewf.Machine(
        "reminders",
        initial="waiting",
        states={
            "waiting": S(
                on_enter=statewf.Send("REMIND", delay="3 days", id="remind"),
                on={
                    "REMIND": "reminded",
                    "ANSWER": statewf.transition("answered", action=statewf.Cancel("remind")),
                },
            ),
            "reminded": S(on={"ANSWER": "answered"}),
            "answered": S(final=True),
        },
    )
    clock = ManualClock()
    engine = tracked(statewf.Engine(**db, clock=clock))
    engine.register(reminders)
    kept, answered = engine.create("reminders"), engine.create("reminders")
    assert kept.wake_at == clock.now() + timedelta(days=3)
    engine.send(answered.id, "ANSWER")
    assert engine.get(answered.id).timers == ()
    clock.advance(timedelta(days=3))
    assert engine.fire_due_timers() == 1
    assert engine.get(kept.id).configuration == ("reminded",)
    assert engine.get(answered.id).configuration == ("answered",)


def test_unknown_and_guarded_events_on_a_chart_are_rejected_unchanged(db: dict[str, Any]) -> None:
    engine = tracked(statewf.Engine(**db, clock=ManualClock()))
    engine.register(order)
    inst = engine.create("order", context={"order_id": "A"})
    before = dump_tables(engine)
    with pytest.raises(statewf.UnknownEvent) as caught:
        engine.send(inst.id, "PAID")  # only once processing
    assert caught.value.details["allowed"] == ["CONFIRM", "CANCEL", "HOLD"]
    assert dump_tables(engine) == before


def test_effects_of_every_microstep_go_to_the_outbox_with_the_row(db: dict[str, Any]) -> None:
    calls: list[str] = []

    @statewf.effect
    def notify(call: statewf.EffectCall) -> None:
        calls.append(f"{call.event}@{call.state}")

    chart = statewf.Machine(
        "notifying",
        initial="a",
        states={
            "a": S(on={"GO": "b"}),
            "b": S(
                initial="b1",
                on_enter=notify,
                states={"b1": S(always="b2"), "b2": S(on_enter=notify)},
            ),
        },
    )
    engine = tracked(statewf.Engine(**db, clock=ManualClock()))
    engine.register(chart)
    inst = engine.create("notifying")
    inst = engine.send(inst.id, "GO")
    rows = engine.history(inst.id)
    assert len(rows) == 2  # one row for GO and its eventless step
    assert [e.seq for e in engine.effects(instance_id=inst.id)] == [2, 2]
    assert calls == ["GO@b.b2", "GO@b.b2"]
