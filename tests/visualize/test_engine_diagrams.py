"""Instance and history diagrams on both stores (a SQLite file and a Postgres schema)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from diagram_machines import order_machine, walk_order
from test_machine_diagram import check_golden

import statewf
import visualize


@pytest.fixture
def engine(db: dict[str, str | None]) -> Iterator[statewf.Engine]:
    """An engine on one real database."""
    eng = statewf.Engine(**db)  # type: ignore[arg-type]
    yield eng
    eng.close()


def marks(diagram: visualize.Diagram) -> dict[str, str]:
    """State id to mark."""
    return {n.id: n.mark for n in diagram.graph.nodes}


def test_instance_diagram_highlights_the_current_state(engine: statewf.Engine) -> None:
    order_id = walk_order(engine)
    diagram = visualize.instance_diagram(engine, order_id)
    assert diagram.graph.kind == "instance"
    current = [n for n in diagram.graph.nodes if n.mark == "current"]
    assert [n.id for n in current] == ["delivered"]
    assert current[0].notes == ("current state",)
    assert "order-1" in diagram.graph.title
    assert "delivered (active)" in diagram.graph.title
    assert 'fillcolor="#fcd34d"' in diagram.source
    assert "<I>current state</I>" in diagram.source
    assert "class n5 current" in diagram.mermaid


def test_instance_diagram_as_of_seq(engine: statewf.Engine) -> None:
    order_id = walk_order(engine)
    # 1 create, 2 UPDATE_ADDRESS, 3 PAY, 4 OUT_OF_STOCK
    assert [
        k
        for k, v in marks(visualize.instance_diagram(engine, order_id, seq=3)).items()
        if v == "current"
    ] == ["processing"]
    diagram = visualize.instance_diagram(engine, order_id, seq=4)
    assert marks(diagram)["backorder"] == "current"
    assert "as of #4" in diagram.graph.title
    with pytest.raises(statewf.InvalidInput, match="seq must be between 1 and 9"):
        visualize.instance_diagram(engine, order_id, seq=99)


def test_history_diagram_counts_and_orders_edges(engine: statewf.Engine) -> None:
    order_id = walk_order(engine)
    graph = visualize.history_diagram(engine, order_id).graph
    taken = {(e.source, e.event): (e.order, e.taken) for e in graph.edges if e.taken}
    assert taken == {
        ("pending", "UPDATE_ADDRESS"): (1, 1),
        ("pending", "PAY"): (2, 1),
        ("processing", "OUT_OF_STOCK"): (3, 1),
        ("backorder", "CHECK_STOCK"): (4, 2),
        ("backorder", "RESTOCK"): (5, 1),
        ("processing", "SHIP"): (6, 1),
        ("shipped", "DELIVER"): (7, 1),
    }
    assert {e.mark for e in graph.edges if not e.taken} == {"not-taken"}
    assert graph.node("backorder").notes == ("entered ×3",)
    assert graph.node("processing").mark == "visited"
    assert graph.node("completed").mark == "unvisited"
    assert graph.node("delivered").mark == "current"


def test_history_diagram_golden_on_both_stores(engine: statewf.Engine) -> None:
    order_id = walk_order(engine)
    diagram = visualize.history_diagram(engine, order_id)
    check_golden("order-history.dot", diagram.source)
    check_golden("order-history.mmd", diagram.mermaid)


def test_history_diagram_up_to_seq(engine: statewf.Engine) -> None:
    order_id = walk_order(engine)
    graph = visualize.history_diagram(engine, order_id, seq=5).graph
    assert sum(e.taken for e in graph.edges) == 4
    assert graph.node("backorder").mark == "current"
    assert graph.node("shipped").mark == "unvisited"
    assert "up to #5" in graph.title


def test_diagrams_from_stored_definitions_without_the_code(
    engine: statewf.Engine, db: dict[str, str | None]
) -> None:
    order_id = walk_order(engine)
    with_code = visualize.history_diagram(engine, order_id)
    bare = statewf.Engine(**db)  # type: ignore[arg-type]
    try:
        assert bare.machines() == []
        assert visualize.history_diagram(bare, order_id) == with_code
        assert marks(visualize.instance_diagram(bare, order_id))["delivered"] == "current"
        (definition,) = bare.stored_definitions()
        assert visualize.machine_diagram(definition) == visualize.machine_diagram(order_machine())
        with pytest.raises(visualize.VisualizeError, match="no machine 'nope'"):
            visualize.api.definition_for(bare, "nope")
    finally:
        bare.close()


def test_unknown_instance(engine: statewf.Engine) -> None:
    with pytest.raises(statewf.InstanceNotFound):
        visualize.instance_diagram(engine, "missing")
    with pytest.raises(statewf.InstanceNotFound):
        visualize.history_diagram(engine, "missing")


def test_resource_scoping(engine: statewf.Engine) -> None:
    engine.register(order_machine())
    order = engine.create("order-lifecycle", id="t-1", resource_id="tenant-a")
    assert visualize.instance_diagram(engine, order.id, resource_id="tenant-a").graph
    with pytest.raises(statewf.InstanceNotFound):
        visualize.instance_diagram(engine, order.id, resource_id="tenant-b")
    with pytest.raises(statewf.InstanceNotFound):
        visualize.history_diagram(engine, order.id, resource_id="tenant-b")
