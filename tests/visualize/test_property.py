"""Hypothesis-generated machines: every state and transition is drawn exactly once."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import visualize
from statewf import Machine, Registry, State, effect, transition
from visualize.dot import html_text
from visualize.mermaid import mermaid_text

GUARDS = [f"guard{i}" for i in range(4)]
ACTIONS = [f"act{i}" for i in range(4)]
EFFECTS = [f"fx{i}" for i in range(2)]


def registry() -> Registry:
    """Every hook name the generated machines may use."""
    reg = Registry()
    for name in GUARDS:
        reg.add(name, lambda ctx, payload: True)
    for name in ACTIONS:
        reg.add(name, lambda ctx, payload: None)
    for name in EFFECTS:
        reg.add(name, effect(lambda call: None))
    return reg


REGISTRY = registry()


@dataclass(frozen=True)
class Spec:
    """A generated transition: (source, target or None for internal, event, hooks)."""

    source: str
    target: str | None
    event: str
    guards: tuple[str, ...]
    unless: tuple[str, ...]
    actions: tuple[str, ...]


state_names = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), min_size=1, max_size=12, unique=True
)
hooks = st.lists(st.sampled_from(GUARDS), max_size=2, unique=True).map(tuple)
actions = st.lists(st.sampled_from(ACTIONS + EFFECTS), max_size=3, unique=True).map(tuple)


@st.composite
def machines(draw: st.DrawFn) -> tuple[Machine, list[Spec]]:
    """A valid machine: a spanning tree from the initial state plus random extra transitions."""
    names = draw(state_names)
    specs: list[Spec] = []
    for i in range(1, len(names)):
        parent = names[draw(st.integers(0, i - 1))]
        specs.append(Spec(parent, names[i], f"E{i}", (), (), ()))
    for _ in range(draw(st.integers(0, 15))):
        source = draw(st.sampled_from(names))
        target = draw(st.one_of(st.none(), st.sampled_from(names)))
        specs.append(
            Spec(
                source,
                target,
                draw(st.sampled_from(["GO", "RETRY", "TICK", "E1"])),
                draw(hooks),
                draw(hooks),
                draw(actions),
            )
        )
    with_outgoing = {s.source for s in specs}
    finals = {n for n in names if n not in with_outgoing and draw(st.booleans())}
    states: dict[str, State] = {}
    for name in names:
        on: dict[str, list[Any]] = {}
        for s in specs:
            if s.source == name:
                on.setdefault(s.event, []).append(
                    transition(
                        s.target,
                        guard=list(s.guards),
                        unless=list(s.unless),
                        action=list(s.actions),
                        internal=s.target is None,
                    )
                )
        states[name] = State(
            on=on,
            on_enter=draw(st.lists(st.sampled_from(ACTIONS + EFFECTS), max_size=2)),
            final=name in finals,
        )
    machine = Machine("generated", initial=names[0], states=states, registry=REGISTRY)
    return machine, specs


def _action_label(name: str) -> str:
    return f"«effect» {name}" if name in EFFECTS else name


@settings(max_examples=60, deadline=None)
@given(machines())
def test_every_state_and_transition_appears_once(generated: tuple[Machine, list[Spec]]) -> None:
    machine, specs = generated
    diagram = visualize.machine_diagram(machine)
    graph = diagram.graph
    assert Counter(n.id for n in graph.nodes) == Counter(list(machine.states))
    drawn = Counter(
        (e.source, None if e.internal else e.target, e.event, e.guards, e.unless, e.actions)
        for e in graph.edges
    )
    expected = Counter(
        (
            s.source,
            s.target,
            s.event,
            s.guards,
            s.unless,
            tuple(visualize.Action(a, a in EFFECTS) for a in s.actions),
        )
        for s in specs
    )
    assert drawn == expected
    for edge in graph.edges:
        for guard in edge.guards:
            assert f"[{guard}" in edge.label or f", {guard}" in edge.label
        for name in edge.unless:
            assert f"!{name}" in edge.label
        for action in edge.actions:
            assert action.label in edge.label.partition(" / ")[2]

    dot = diagram.source
    for name in machine.states:
        assert dot.count(f"<B>{html_text(name)}</B>") == 1
    arrows = [line for line in dot.splitlines() if " -> " in line]
    assert len(arrows) == 1 + sum(1 for s in specs if s.target is not None)
    node_lines = [line for line in dot.splitlines() if re.match(r"\s+n\d+ \[", line)]
    assert len(node_lines) == len(machine.states)
    assert dot.count('peripheries="2"') == sum(1 for s in machine.states.values() if s.final)

    mermaid = diagram.mermaid
    for name in machine.states:
        assert mermaid.count(f'state "{mermaid_text(name)}" as ') == 1
    mermaid_arrows = [
        line for line in mermaid.splitlines() if " --> " in line and "[*]" not in line
    ]
    assert len(mermaid_arrows) == sum(1 for s in specs if s.target is not None)
    for s in specs:
        if s.actions:
            label = ", ".join(_action_label(a) for a in s.actions)
            assert mermaid_text(label) in mermaid
