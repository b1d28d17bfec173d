"""Transitions fired without ``transitions`` (nothing to call) decide as ``transitions`` does.

``CompiledMachine`` fires a (state, event) whose first candidate has no guard, no action
and no exit or entry action directly. For random flat machines mixing such transitions
with guarded ones, internal ones, self-loops, hooks on states and timers, every event
sent in every order gives the same records, snapshots and rejections with the direct
path as with it emptied (everything through the ``transitions`` trigger).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from statewf import EventRejected, Machine, State, StatewfError, transition
from statewf.adapter import CompiledMachine
from statewf.decide import Decision, decide, fire_timer, start
from statewf.records import TransitionRecord

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NAMES = ("a", "b", "c")
EVENTS = ("GO", "BACK", "STAY", "NEXT")


def yes(ctx: Any, ev: Any) -> bool:
    return True


def no(ctx: Any, ev: Any) -> bool:
    return False


def bump(ctx: Any, ev: Any) -> dict[str, Any]:
    return {"n": ctx.get("n", 0) + 1}


candidates = st.fixed_dictionaries(
    {
        "target": st.sampled_from(NAMES),
        "guard": st.sampled_from([None, yes, no]),
        "unless": st.sampled_from([None, no, yes]),
        "action": st.sampled_from([None, bump]),
        "internal": st.booleans(),
    }
)
states = st.fixed_dictionaries(
    {
        "on": st.dictionaries(
            st.sampled_from(EVENTS), st.lists(candidates, min_size=1, max_size=3)
        ),
        "on_enter": st.sampled_from([None, bump]),
        "on_exit": st.sampled_from([None, bump]),
        "final": st.booleans(),
        "timer": st.none() | candidates,
    }
)


def build(drawn: dict[str, dict[str, Any]]) -> Machine:
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
    return Machine("direct", initial="a", states=built)


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
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(dict.fromkeys(NAMES, states)),
    st.lists(st.sampled_from([*EVENTS, "TIMER"]), max_size=12),
)
def test_direct_firing_decides_as_transitions(drawn: dict[str, Any], steps: list[str]) -> None:
    try:
        machine = build(drawn)
    except StatewfError:
        return  # not a valid machine (e.g. nothing reaches a state): nothing to compare
    fast = CompiledMachine(machine)
    slow = CompiledMachine(machine)
    slow.direct.clear()
    assert story(fast, steps) == story(slow, steps)
