"""Stateful property test of delayed transitions: events, clock moves and schedulers mixed.

Invariants after every step, for every instance, on real stores:
- folding the log gives exactly the snapshot, and the log is numbered 1..n;
- the wake-up time is what the log implies: entered-at of the current state plus the
  delay of its first timer not yet fired since (None when they all fired);
- no timer row is written before its due time, and each timer of a state fires at
  most once per entry into it;
- after a scheduler run, nothing registered is left due.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import statewf
from statewf.fold import fold
from statewf.records import Instance, TransitionRecord
from statewf.testing import ManualClock


def remind(ctx: dict[str, Any], ev: None) -> dict[str, Any]:
    return {"reminders": ctx.get("reminders", 0) + 1}


def escalate(ctx: dict[str, Any], ev: None) -> dict[str, Any]:
    return {"escalations": ctx.get("escalations", 0) + 1}


def allowed_to_time_out(ctx: dict[str, Any], ev: None) -> bool:
    return not ctx.get("pinned", False)


ticket = statewf.Machine(
    "ticket-timers",
    initial="open",
    states={
        "open": statewf.State(
            on={
                "ASSIGN": "working",
                "CLOSE": "closed",
                "NOTE": statewf.transition(internal=True, action=lambda c, e: {"noted": True}),
            },
            after={
                "1 hour": statewf.transition(internal=True, action=remind),
                "3 hours": "escalated",
            },
        ),
        "escalated": statewf.State(
            on={"ASSIGN": "working", "CLOSE": "closed"},
            after={"2 hours": statewf.transition("escalated", action=escalate)},
        ),
        "working": statewf.State(
            on={
                "PAUSE": "open",
                "DONE": "closed",
                "PIN": statewf.transition(internal=True, action=lambda c, e: {"pinned": True}),
            },
            after={
                "30 minutes": statewf.transition("open", guard=allowed_to_time_out),
                "8 hours": "open",
            },
        ),
        "closed": statewf.State(final=True),
    },
)
EVENTS = ["ASSIGN", "CLOSE", "NOTE", "PAUSE", "DONE", "PIN", "NOPE"]


def expected_wake(log: list[TransitionRecord]) -> datetime | None:
    """The wake-up time the log implies, computed independently of the engine."""
    fired = 0
    for record in reversed(log):
        if record.kind == "timer" and (record.meta.get("skipped") or record.meta.get("internal")):
            fired += 1
        elif not record.meta.get("internal"):
            state = record.target[0]
            timers = ticket.timers.get(state, ())
            if fired >= len(timers) or ticket.states[state].final:
                return None
            return record.created_at + timers[fired].delay
    raise AssertionError("no create record")


def check_timer_rows(log: list[TransitionRecord]) -> None:
    entered_at = log[0].created_at
    seen: set[str] = set()
    for record in log[1:]:
        if record.kind == "timer":
            assert record.event is not None
            label = record.event
            delay = next(t.delay for t in ticket.timers[record.source[0]] if t.label == label)
            assert record.created_at >= entered_at + delay, "a timer fired before it was due"
            assert label not in seen, f"{label} fired twice in one stay"
            seen.add(label)
        if not record.meta.get("internal") and not record.meta.get("skipped"):
            entered_at, seen = record.created_at, set()


class TimerMachine(RuleBasedStateMachine):
    engine: ClassVar[statewf.Engine]
    clock: ClassVar[ManualClock]
    instances = Bundle("instances")

    def __init__(self) -> None:
        super().__init__()
        self.known: list[str] = []

    @rule(target=instances)
    def create(self) -> str:
        inst = self.engine.create(ticket)
        self.known.append(inst.id)
        return inst.id

    @rule(instance=instances, event=st.sampled_from(EVENTS))
    def send(self, instance: str, event: str) -> None:
        before = self.engine.history(instance)
        try:
            self.engine.send(instance, event)
        except statewf.EventRejected:
            assert self.engine.history(instance) == before

    @rule(minutes=st.integers(min_value=0, max_value=300))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    @precondition(lambda self: bool(self.known))
    @rule()
    def scheduler_runs(self) -> None:
        while self.engine.fire_due_timers(limit=3):
            pass
        now = self.clock.now()
        for instance in self.known:
            wake = self.engine.get(instance).wake_at
            assert wake is None or wake > now, "a due timer was left after a scheduler run"

    @invariant()
    def the_log_explains_the_snapshot_and_its_timer(self) -> None:
        for instance in self.known:
            log = self.engine.history(instance)
            snapshot: Instance = self.engine.get(instance)
            assert [r.seq for r in log] == list(range(1, len(log) + 1))
            assert fold(log) == snapshot
            assert snapshot.wake_at == expected_wake(log)
            check_timer_rows(log)


def test_delayed_transitions_keep_their_promises(db: dict[str, Any]) -> None:
    clock = ManualClock()
    with statewf.Engine(**db, clock=clock) as engine:
        engine.register(ticket)
        TimerMachine.engine = engine
        TimerMachine.clock = clock
        run_state_machine_as_test(
            TimerMachine,
            settings=settings(
                max_examples=20,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
