"""A compiled chart as JSON-able data: what ``register`` stores and fingerprints."""

from __future__ import annotations

from typing import Any

from statewf.chart.model import (
    Cancel,
    Chart,
    ChartTransition,
    Executable,
    In,
    Log,
    Node,
    Raise,
    Send,
)
from statewf.hooks import Hook


def content_label(item: Executable) -> str:
    """One executable content item as text (``raise X``, ``send R in 3 days``, a hook name)."""
    if isinstance(item, Hook):
        return f"effect:{item.name}" if item.is_effect else item.name
    if isinstance(item, Raise):
        return f"raise {item.event}"
    if isinstance(item, Send):
        where = " internal" if item.internal else ""
        delay = f" after {item.delay}" if item.delay not in (None, "", 0) else ""
        name = f" id={item.id}" if item.id else ""
        return f"send{where} {item.event}{delay}{name}"
    if isinstance(item, Cancel):
        return f"cancel {item.id}"
    assert isinstance(item, Log)
    return f"log {item.label} {item.expr}".rstrip()


def guard_label(guard: Hook | In) -> str:
    """A guard as text: its hook name, or ``In(state)``."""
    return f"In({guard.state})" if isinstance(guard, In) else guard.name


def transition_definition(t: ChartTransition) -> dict[str, Any]:
    """One transition as data."""
    return {
        "events": list(t.events),
        "label": t.label,
        "targets": [s.path for s in t.targets],
        "guards": [guard_label(g) for g in t.guards],
        "unless": [guard_label(g) for g in t.unless],
        "actions": [content_label(a) for a in t.actions],
        "type": "internal" if t.internal else "external",
        "payload": t.payload.model_json_schema() if t.payload else None,
        "description": t.description,
    }


def node_definition(node: Node) -> dict[str, Any]:
    """One node as data (children by path, in document order)."""
    out: dict[str, Any] = {
        "id": node.id,
        "kind": node.kind,
        "children": [c.path for c in node.children],
        "on_enter": [content_label(a) for a in node.on_entry],
        "on_exit": [content_label(a) for a in node.on_exit],
        "transitions": [transition_definition(t) for t in node.transitions],
        "description": node.description,
    }
    if node.initial is not None:
        out["initial"] = transition_definition(node.initial)
    if node.timers:
        out["after"] = [{"label": t.label, "seconds": t.delay.total_seconds()} for t in node.timers]
    if node.kind == "history":
        out["deep"] = node.deep
    return out


def chart_definition(chart: Chart) -> dict[str, Any]:
    """The whole chart as data: the root's initial targets and every node by path."""
    assert chart.root.initial is not None
    return {
        "initial": [s.path for s in chart.root.initial.targets],
        "top": [c.path for c in chart.root.children],
        "ignore_unmatched": chart.ignore_unmatched,
        "nodes": {node.path: node_definition(node) for node in chart.nodes},
    }
