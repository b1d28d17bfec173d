"""Machine diagrams: the extracted graph, DOT and Mermaid text of the order machine.

The golden files under ``golden/`` are the reviewed output; regenerate them with
``STATEWF_UPDATE_GOLDEN=1 python -m pytest tests/visualize`` and read the diff.
"""

from __future__ import annotations

import json
import os
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from diagram_machines import order_machine

import statewf
import visualize
from statewf import Machine, State, transition
from statewf.testing import ManualClock
from visualize.extract import describe_delay, machine_graph

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("STATEWF_UPDATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with the golden file ``name`` (or rewrite it when updating)."""
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with STATEWF_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def test_order_graph_matches_golden() -> None:
    graph = visualize.machine_diagram(order_machine()).graph
    check_golden("order.graph.json", json.dumps(graph.to_dict(), indent=2) + "\n")


def test_order_dot_matches_golden() -> None:
    check_golden("order.dot", visualize.machine_diagram(order_machine()).source)


def test_order_mermaid_matches_golden() -> None:
    check_golden("order.mmd", visualize.machine_diagram(order_machine()).mermaid)


def test_order_graph_content() -> None:
    graph = machine_graph(order_machine())
    assert graph.initial == "pending"
    assert {n.id for n in graph.nodes} == {
        "pending",
        "processing",
        "shipped",
        "delivered",
        "completed",
        "cancelled",
        "backorder",
        "returning",
    }
    assert {n.id for n in graph.nodes if n.final} == {"completed", "cancelled"}
    labels = {(e.source, e.event): e.label for e in graph.edges}
    assert labels["pending", "PAY"] == "PAY [payment_covers_total] / record_payment"
    assert labels["delivered", "CLOSE"] == "CLOSE [!return_requested]"
    assert labels["processing", "CANCEL"] == "CANCEL / «effect» refund_payment"
    internal = [e for e in graph.edges if e.internal]
    assert [(e.source, e.event) for e in internal] == [("pending", "UPDATE_ADDRESS")]
    self_loops = [e for e in graph.edges if e.source == e.target and not e.internal]
    assert [(e.source, e.event) for e in self_loops] == [("backorder", "CHECK_STOCK")]
    processing = graph.node("processing")
    assert [a.label for a in processing.entry] == ["reserve_stock"]
    assert [a.label for a in graph.node("delivered").exit] == ["«effect» notify_customer"]


def test_dot_marks_initial_final_entry_and_internal() -> None:
    source = visualize.machine_diagram(order_machine()).source
    assert 'rankdir="LR"' in source
    assert 'start [shape="point"' in source
    assert "start -> n0" in source
    assert source.count('peripheries="2"') == 2
    assert "entry / reserve_stock" in source
    assert "exit / «effect» notify_customer" in source
    # the internal transition is a line in pending's box, not an arrow
    assert "UPDATE_ADDRESS / set_address</TD>" in source
    assert source.count(" -> ") == 1 + sum(
        1 for e in machine_graph(order_machine()).edges if not e.internal
    )


def test_mermaid_marks_initial_final_and_descriptions() -> None:
    text = visualize.machine_diagram(order_machine()).mermaid
    lines = text.splitlines()
    assert lines[1] == "stateDiagram-v2"
    assert "    direction LR" in lines
    assert "    [*] --> n0" in lines
    assert sum(1 for line in lines if line.endswith("--> [*]")) == 2
    assert "    n0 : UPDATE_ADDRESS / set_address" in lines


def shuffled(definition: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same definition with every dict's keys in another order (as JSONB returns them)."""
    rng = random.Random(seed)

    def shuffle(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {k: shuffle(v) for k, v in items}
        if isinstance(value, list):
            return [shuffle(v) for v in value]
        return value

    result: dict[str, Any] = shuffle(definition)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stored_definition_draws_the_same_diagram(seed: int) -> None:
    machine = order_machine()
    stored = json.loads(json.dumps(machine.to_definition()))
    from_machine = visualize.machine_diagram(machine)
    from_stored = visualize.machine_diagram(shuffled(stored, seed))
    assert from_stored.graph == from_machine.graph
    assert from_stored.source == from_machine.source
    assert from_stored.mermaid == from_machine.mermaid


def test_bad_input_gives_visualize_error() -> None:
    with pytest.raises(visualize.VisualizeError, match=r"statewf\.Machine or a machine definition"):
        visualize.machine_diagram(42)  # type: ignore[arg-type]
    with pytest.raises(visualize.VisualizeError, match="non-empty 'states'"):
        visualize.machine_diagram({"name": "x", "states": {}})
    with pytest.raises(visualize.VisualizeError, match="'on' must map events"):
        visualize.machine_diagram({"name": "x", "initial": "a", "states": {"a": {"on": "b"}}})


def test_unknown_target_in_a_stored_definition_still_draws() -> None:
    definition = {
        "name": "broken",
        "initial": "a",
        "states": {"a": {"on": {"GO": [{"target": "gone"}]}}},
    }
    graph = visualize.machine_diagram(definition).graph
    assert graph.node("gone").notes == ("not in this definition",)


def expiry_machine() -> Machine:
    """Unpaid orders get a reminder after 3 days and expire after 7; paid ones time out."""
    return Machine(
        "order-with-expiry",
        initial="awaiting_payment",
        states={
            "awaiting_payment": State(
                on={"PAY": "paid"},
                after={
                    "3 days": transition(internal=True, action=remind),
                    "7 days": "expired",
                },
            ),
            "paid": State(on={"SHIP": "shipped"}, timeout="2 days", on_timeout="late"),
            "late": State(on={"SHIP": "shipped"}),
            "shipped": State(final=True),
            "expired": State(final=True),
        },
    )


def remind(ctx: dict[str, Any], payload: None) -> dict[str, Any]:
    """Count reminders."""
    return {"reminders": ctx.get("reminders", 0) + 1}


def test_delayed_transitions() -> None:
    diagram = visualize.machine_diagram(expiry_machine())
    timers = [e for e in diagram.graph.edges if e.after is not None]
    assert [(e.source, e.label, e.internal, e.after) for e in timers] == [
        ("awaiting_payment", "after 3 days / remind", True, "3 days"),
        ("awaiting_payment", "after 7 days", False, "7 days"),
        ("paid", "timeout 2 days", False, "2 days"),
    ]
    assert "<I>after 7 days</I>" in diagram.source
    assert "<I>timeout 2 days</I>" in diagram.source
    assert "after 3 days / remind</TD>" in diagram.source  # internal: inside the box
    assert "    n0 : after 3 days / remind" in diagram.mermaid.splitlines()
    assert describe_delay(9000) == "2 h 30 min"
    assert describe_delay(86400.0) == "1 day"
    assert describe_delay("P1D") == "P1D"
    stored = json.loads(json.dumps(expiry_machine().to_definition()))
    assert visualize.machine_diagram(shuffled(stored, 3)) == diagram


def test_history_counts_timer_firings(tmp_path: Path) -> None:
    clock = ManualClock()
    with statewf.Engine(f"sqlite:///{tmp_path / 't.db'}", clock=clock) as engine:
        engine.register(expiry_machine())
        order = engine.create("order-with-expiry", id="u1")
        for _ in range(8):
            clock.advance(timedelta(days=1))
            engine.fire_due_timers()
        graph = visualize.history_diagram(engine, order.id).graph
    taken = {e.label: (e.order, e.taken) for e in graph.edges if e.taken}
    assert taken == {"after 3 days / remind": (1, 1), "after 7 days": (2, 1)}
    assert graph.node("expired").mark == "current"
    assert graph.node("awaiting_payment").notes == ("entered ×1",)


def test_nested_paths_become_clusters() -> None:
    definition = {
        "name": "shop",
        "initial": "cart",
        "states": {
            "cart": {"on": {"CHECKOUT": [{"target": "shipping"}]}},
            "shipping": {"parallel": False},
            "shipping.packing": {"on": {"PACKED": [{"target": "shipping.sent"}]}},
            "shipping.sent": {"on": {"DONE": [{"target": "done"}]}},
            "done": {"final": True},
        },
    }
    diagram = visualize.machine_diagram(definition)
    graph = diagram.graph
    assert [c.id for c in graph.clusters] == ["shipping"]
    assert {n.id for n in graph.nodes if n.parent == "shipping"} == {
        "shipping.packing",
        "shipping.sent",
    }
    assert graph.node("shipping.packing").label == "packing"
    assert "subgraph cluster_0 {" in diagram.source
    assert 'lhead="cluster_0"' in diagram.source
    assert "compound=" in diagram.source
    assert "state c0 {" in diagram.mermaid


def test_twenty_state_machine_renders_left_to_right(tmp_path: Path) -> None:
    states = {f"step{i:02d}": {"on": {"NEXT": [{"target": f"step{i + 1:02d}"}]}} for i in range(19)}
    states["step19"] = {"final": True}
    for i in range(0, 19, 3):
        states[f"step{i:02d}"]["on"]["SKIP"] = [{"target": "step19", "guards": ["can_skip"]}]
    diagram = visualize.machine_diagram({"name": "long", "initial": "step00", "states": states})
    svg = diagram.pipe("svg").decode()
    width, height = _svg_size(svg)
    assert width > height  # ranks run left to right


def _svg_size(svg: str) -> tuple[float, float]:
    import re

    match = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    assert match, svg[:300]
    return float(match.group(1)), float(match.group(2))
