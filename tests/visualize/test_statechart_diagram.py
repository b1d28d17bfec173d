"""Statechart diagrams: clusters, parallel regions, history nodes, initial arrows, overlays."""

from __future__ import annotations

import re
from pathlib import Path

import statewf
from examples.order_statechart import order  # the machine
from statewf.testing import ManualClock
from tests.conftest import tracked
from visualize.dot import to_dot
from visualize.extract import history_graph, instance_graph, machine_graph
from visualize.mermaid import to_mermaid


def test_compound_states_are_clusters_and_parallel_regions_are_labelled() -> None:
    graph = machine_graph(order)
    clusters = {c.id: c for c in graph.clusters}
    assert set(clusters) == {
        "open",
        "open.processing",
        "open.processing.payment",
        "open.processing.shipping",
    }
    assert clusters["open.processing"].parallel
    assert clusters["open.processing.payment"].label == "payment"
    assert clusters["open.processing.payment"].parent == "open.processing"
    assert graph.node("open.resume").label == "H*"
    assert graph.node("open.processing.shipping.picking").parent == "open.processing.shipping"


def test_initial_arrows_at_every_level() -> None:
    graph = machine_graph(order)
    initials = {c.id: c.initial for c in graph.clusters}
    assert initials["open"] == "open.placed"
    assert initials["open.processing.shipping"] == "open.processing.shipping.picking"
    assert initials["open.processing"] is None  # a parallel state enters every region
    dot = to_dot(graph)
    assert dot.count("_start [shape") == 3
    mermaid = to_mermaid(graph)
    assert mermaid.count("[*] -->") == 4  # the chart's own, open, payment, shipping


def test_mermaid_uses_composite_and_concurrent_states() -> None:
    text = to_mermaid(machine_graph(order))
    processing = text[text.index('state "processing"') :]
    assert re.search(r"state c\d+ \{", processing)
    assert "\n            --\n" in processing  # the two regions of processing
    assert "done.state.open.processing" in text


def test_current_configuration_and_history_overlay_count_microsteps(tmp_path: Path) -> None:
    engine = tracked(statewf.Engine(f"sqlite:///{tmp_path / 'd.db'}", clock=ManualClock()))
    engine.register(order)
    inst = engine.create("order", context={"order_id": "A"})
    for event in ("CONFIRM", "PAID", "PICKED", "PACKED"):
        inst = engine.send(inst.id, event)
    history = history_graph(order, engine.history(inst.id))
    taken = {(e.source, e.event): e.taken for e in history.edges if e.taken}
    assert taken == {
        ("open.placed", "CONFIRM"): 1,
        ("open.processing.payment.unpaid", "PAID"): 1,
        ("open.processing.shipping.picking", "PICKED"): 1,
        ("open.processing.shipping.packing", "PACKED"): 1,
        # the done event is a microstep of PACKED's row, counted on its own edge
        ("open.processing", "done.state.open.processing"): 1,
    }
    assert history.node("delivered").mark == "current"
    assert "entered ×1" in history.node("open.processing.shipping.shipped").notes
    middle = engine.state_at(inst.id, 3)
    current = instance_graph(order, middle)
    marked = [n.id for n in current.nodes if n.mark == "current"]
    assert marked == ["open.processing.payment.paid", "open.processing.shipping.picking"]
