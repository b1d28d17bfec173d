"""Transitions fired without ``transitions`` (no code to call) decide as ``transitions`` does.

``CompiledMachine`` fires a (state, event) directly when its first candidate has no
guard and its actions and both states' exit and entry hooks are effects (or absent).
For random flat machines mixing such transitions with guarded ones, internal ones,
self-loops, actions and effects on transitions and states, and timers, with and
without a context model, every event sent in every order gives the same records,
snapshots, effects (in order) and rejections with the direct path as with it emptied
(everything through the ``transitions`` trigger).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError, model_validator

from statewf import EventRejected, Machine, State, StatewfError, effect, transition
from statewf.adapter import CompiledMachine
from statewf.decide import Decision, decide, fire_timer, start
from statewf.records import TransitionRecord, event_record

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NAMES = ("a", "b", "c")
EVENTS = ("GO", "BACK", "STAY", "NEXT")


def yes(ctx: Any, ev: Any) -> bool:
    return True


def no(ctx: Any, ev: Any) -> bool:
    return False


def bump(ctx: Any, ev: Any) -> dict[str, Any]:
    n = ctx.get("n", 0) if isinstance(ctx, dict) else ctx.n
    return {"n": n + 1}


@effect
def ping(call: Any) -> None:
    """An effect: recorded by the decision, run later from the outbox."""


@effect
def pong(call: Any) -> None:
    """Another effect, so the order of several is visible."""


class Counter(BaseModel):
    n: int = 0


hooks = st.sampled_from([None, bump, ping, pong, [ping, pong], [pong, bump]])


candidates = st.fixed_dictionaries(
    {
        "target": st.sampled_from(NAMES),
        # weighted towards transitions fired directly (no guard, not internal)
        "guard": st.sampled_from([None, None, None, yes, no]),
        "unless": st.sampled_from([None, None, None, no, yes]),
        "action": hooks,
        "internal": st.sampled_from([False, False, True]),
    }
)
states = st.fixed_dictionaries(
    {
        "on": st.dictionaries(
            st.sampled_from(EVENTS), st.lists(candidates, min_size=1, max_size=3)
        ),
        "on_enter": hooks,
        "on_exit": hooks,
        "final": st.booleans(),
        "timer": st.none() | candidates,
    }
)


def build(drawn: dict[str, dict[str, Any]], model: type[BaseModel] | None = None) -> Machine:
    built = {}
    for name in NAMES:
        spec = drawn[name]
        on = {
            event: [
                transition(
                    None if c["internal"] else c["target"],
                    guard=c["guard"],
                    unless=c["unless"],
                    action=c["action"],
                    internal=c["internal"],
                )
                for c in options
            ]
            for event, options in spec["on"].items()
        }
        timer = spec["timer"]
        after = (
            {}
            if timer is None or (spec["final"] and name == "c")
            else {"1 s": transition(timer["target"], guard=timer["guard"], action=timer["action"])}
        )
        final = spec["final"] and name == "c"
        if not final:  # every state reachable: a -> b -> c -> a, with nothing to call
            on.setdefault("NEXT", [transition(NAMES[(NAMES.index(name) + 1) % len(NAMES)])])
        built[name] = State(
            on={} if final else on,
            on_enter=spec["on_enter"],
            on_exit=spec["on_exit"],
            final=final,
            after=after,
        )
    return Machine("direct", initial="a", states=built, context=model)


def story(compiled: CompiledMachine, steps: list[str]) -> list[Any]:
    """Each step's record and snapshot, or the rejection's class and message."""
    out: list[Any] = []
    decision: Decision = start(compiled, instance_id="i", context={}, now=T0)
    history: list[TransitionRecord] = [decision.record]
    for n, step in enumerate(steps, start=1):
        now = T0 + timedelta(seconds=n)
        try:
            if step == "TIMER":
                decision = fire_timer(compiled, decision.snapshot, history, now)
            else:
                decision = decide(compiled, decision.snapshot, step, None, now)
        except (EventRejected, StatewfError) as exc:
            out.append((type(exc).__name__, str(exc)))
            continue
        history.append(decision.record)
        out.append((decision.record, decision.snapshot, decision.effects))
        assert_as_validated(decision.record)
    return out


def assert_as_validated(record: TransitionRecord) -> None:
    """An event row built without validation (``records.event_record``) is the row the
    validated constructor builds from the same fields: equal, same repr, dumps, fields set."""
    fields = {name: getattr(record, name) for name in record.model_fields_set}
    validated = TransitionRecord(**fields)
    assert record == validated
    assert repr(record) == repr(validated)
    assert record.model_dump() == validated.model_dump()
    assert record.model_dump_json() == validated.model_dump_json()
    assert record.model_fields_set == validated.model_fields_set


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(dict.fromkeys(NAMES, states)),
    st.lists(st.sampled_from([*EVENTS, "TIMER"]), max_size=12),
    st.sampled_from([None, Counter]),
)
def test_direct_firing_decides_as_transitions(
    drawn: dict[str, Any], steps: list[str], model: type[BaseModel] | None
) -> None:
    try:
        machine = build(drawn, model)
    except StatewfError:
        return  # not a valid machine (e.g. nothing reaches a state): nothing to compare
    fast = CompiledMachine(machine)
    slow = CompiledMachine(machine)
    slow.direct.clear()
    assert story(fast, steps) == story(slow, steps)


def test_effect_only_hooks_are_fired_directly_and_recorded_in_order() -> None:
    machine = Machine(
        "effects",
        initial="a",
        context=Counter,
        states={
            "a": State(on={"GO": transition("b", action=[pong, ping])}, on_exit=ping),
            "b": State(on={"BACK": "a", "BUMP": transition("a", action=bump)}, on_enter=pong),
        },
    )
    compiled = CompiledMachine(machine)
    assert ("a", "GO") in compiled.direct
    assert ("b", "BUMP") not in compiled.direct
    decision = start(compiled, instance_id="i", context={"n": 1}, now=T0)
    decision = decide(compiled, decision.snapshot, "GO", None, T0)
    # the transition's actions, then the source's exit, then the target's entry
    assert decision.effects == ("pong", "ping", "ping", "pong")
    assert decision.snapshot.context == {"n": 1}
    assert decision.record.context_set == {}


def test_a_stored_context_its_model_refuses_is_refused_on_the_direct_path_too() -> None:
    machine = Machine(
        "strict", initial="a", context=Counter, states={"a": State(on={"GO": "b"}), "b": State()}
    )
    fast, slow = CompiledMachine(machine), CompiledMachine(machine)
    slow.direct.clear()
    decision = start(fast, instance_id="i", context={"n": 1}, now=T0)
    bad = decision.snapshot.model_copy(update={"context": {"n": "not a number"}})
    assert ("a", "GO") in fast.direct
    for compiled in (fast, slow):
        with pytest.raises(ValidationError):
            decide(compiled, bad, "GO", None, T0)


class Filling(BaseModel):
    """A model whose before-validator fills a default into the data it is given."""

    n: int = 0
    seen: int = 0

    @model_validator(mode="before")
    @classmethod
    def fill(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data["seen"] = data.get("seen", 0) + 1  # in place, as such validators do
        return data


def test_a_validator_on_the_direct_path_never_sees_the_snapshots_own_context() -> None:
    machine = Machine(
        "filling", initial="a", context=Filling, states={"a": State(on={"GO": "b"}), "b": State()}
    )
    compiled = CompiledMachine(machine)
    assert ("a", "GO") in compiled.direct
    snapshot = start(compiled, instance_id="i", context={"n": 1}, now=T0).snapshot
    before = dict(snapshot.context)
    decision = decide(compiled, snapshot, "GO", None, T0)
    assert snapshot.context == before
    assert decision.snapshot.context == before
    assert decision.record.context_set == {}


def test_an_event_row_of_values_from_outside_is_validated_as_before() -> None:
    """``event_record`` checks what comes from outside the engine (a clock's instant, the
    event name, the context change): a value of another type is converted or refused by
    the model's validation, and the row's context change is its own dict."""
    changed = {"n": 1}
    fields = ("i", 2, "GO", ("a",), ("b",), None, changed, (), "active", None, {})
    built = event_record(*fields, T0)
    assert built.context_set == changed
    assert built.context_set is not changed
    assert_as_validated(built)
    from_text = event_record(*fields, "2030-01-01T00:00:00+00:00")  # type: ignore[arg-type]
    assert from_text.created_at == T0
    assert type(from_text.created_at) is datetime
    with pytest.raises(ValidationError):
        event_record(*fields, object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        event_record("i", 2, "GO", ("a",), ("b",), None, {1: 2}, (), "active", None, {}, T0)
