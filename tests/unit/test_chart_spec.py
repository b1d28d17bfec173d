"""Statechart definitions: what builds, what is refused, and the YAML/JSON nesting."""

from __future__ import annotations

from pathlib import Path

import pytest

from statewf import History, Machine, SpecError, State, load_machine, transition


def chart(**states: State | History) -> Machine:
    first = next(iter(states))
    return Machine("m", initial=first, states=states)


@pytest.mark.parametrize(
    ("states", "problem"),
    [
        ({"a": State(states={"x": State(on={"E": "nowhere"})})}, "targets unknown state 'nowhere'"),
        ({"a": State(final=True, states={"x": State()})}, "cannot have child states"),
        ({"a": State(parallel=True)}, "needs child states"),
        ({"a": State(states={"x": State()}, initial="b"), "b": State()}, "is not inside"),
        ({"a": State(initial="x", states={"x": State(), "y": State()})}, "'a.y' is unreachable"),
        ({"a": State(states={"x.y": State()})}, "without '.'"),
        ({"a": State(on={"E": "b"}), "b": State(final=True, on={"F": "a"})}, "final state 'b'"),
        ({"a": State(after={"soon": "a"}, initial=None, states={"x": State()})}, "soon"),
        (
            {"a": State(on={"E": transition("a", guard="missing")}, states={"x": State()})},
            "no hook named 'missing'",
        ),
        ({"h": History(), "a": State(states={"x": State()})}, "inside a compound state"),
    ],
)
def test_bad_charts_are_refused_with_every_problem(states: dict, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        chart(**states)
    assert problem in caught.value.message


def test_unreachable_states_may_be_kept_when_asked() -> None:
    machine = Machine(
        "m",
        initial="a",
        allow_unreachable=True,
        states={"a": State(initial="x", states={"x": State(), "y": State()})},
    )
    assert machine.unreachable == ("a.y",)


def test_targets_resolve_like_nested_scopes() -> None:
    machine = chart(
        a=State(
            initial="x",
            on={"TO_B": "b", "DEEP": "b.q"},
            states={"x": State(on={"SIB": "y", "OUT": "b", "ID": "#target"}), "y": State()},
        ),
        b=State(initial="p", states={"p": State(), "q": State(id="target")}),
    )
    assert machine.chart is not None
    targets = {
        (t.source.path, t.events[0]): [n.path for n in t.targets]
        for t in machine.chart.transitions()
        if t.events
    }
    assert targets[("a.x", "SIB")] == ["a.y"]
    assert targets[("a.x", "OUT")] == ["b"]
    assert targets[("a.x", "ID")] == ["b.q"]
    assert targets[("a", "DEEP")] == ["b.q"]


def test_fingerprint_follows_the_nesting() -> None:
    one = chart(
        a=State(initial="x", states={"x": State(), "y": State(on={"E": "x"})}, on={"F": "a.y"})
    )
    two = chart(
        a=State(initial="x", states={"x": State(), "y": State(on={"E": "y"})}, on={"F": "a.y"})
    )
    assert one.fingerprint != two.fingerprint
    assert one.to_definition()["chart"]["nodes"]["a.y"]["transitions"][0]["targets"] == ["a.x"]


def test_yaml_takes_the_same_nesting(tmp_path: Path) -> None:
    path = tmp_path / "order.yaml"
    path.write_text(
        """
name: order
initial: open
states:
  open:
    initial: placed
    on: {HOLD: on_hold}
    states:
      placed: {on: {CONFIRM: processing}}
      processing:
        parallel: true
        on_done: done
        states:
          pay: {initial: unpaid, states: {unpaid: {on: {PAID: paid}}, paid: {final: true}}}
          ship:
            initial: picking
            states:
              picking:
                transitions:
                  - {event: "SHIP.*", target: shipped}
                  - {target: shipped, guard: null}
              shipped: {final: true}
      resume: {history: deep}
  on_hold: {on: {RELEASE: open.resume}}
  done: {final: true}
"""
    )
    machine = load_machine(path)
    assert machine.chart is not None
    assert machine.chart.by_path["open.resume"].deep
    assert machine.chart.by_path["open.processing"].kind == "parallel"
    picking = machine.chart.by_path["open.processing.ship.picking"]
    assert [t.events for t in picking.transitions] == [("SHIP.*",), ()]
