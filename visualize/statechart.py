"""Statechart definitions for the extractor: nodes by path, in the shape flat machines use.

A chart's stored definition (``definition["chart"]``) lists every node by dotted path.
:func:`chart_states` turns it into the ``states`` mapping :mod:`visualize.extract`
draws (a compound state becomes a cluster because its children's paths start with
its own), plus what only charts have: each cluster's initial child, history nodes
(drawn ``H`` / ``H*``) and, for the history overlay, the edges a microstep took.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The event text of an eventless transition in a diagram.
ALWAYS = "always"


def is_chart(definition: Mapping[str, Any]) -> bool:
    """True for a statechart's definition (it has ``chart`` instead of ``states``)."""
    return isinstance(definition.get("chart"), Mapping)


def transition_event(t: Mapping[str, Any]) -> str:
    """The event text a transition is drawn (and a microstep is matched) with."""
    return str(t.get("label") or " ".join(t.get("events") or ()) or ALWAYS)


def chart_states(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The ``states`` mapping of a chart definition, every node by path, document order."""
    chart: Mapping[str, Any] = definition["chart"]
    states: dict[str, Any] = {}
    for path, node in chart["nodes"].items():
        on: dict[str, list[dict[str, Any]]] = {}
        for t in node.get("transitions", ()):
            event = transition_event(t)
            for target in t.get("targets") or [None]:
                on.setdefault(event, []).append(
                    {
                        "target": target,
                        "guards": t.get("guards", []),
                        "unless": t.get("unless", []),
                        "actions": t.get("actions", []),
                        "description": t.get("description", ""),
                    }
                )
        kind = node.get("kind")
        states[path] = {
            "on": on,
            "on_enter": node.get("on_enter", []),
            "on_exit": node.get("on_exit", []),
            "final": kind == "final",
            "parallel": kind == "parallel",
            "description": node.get("description", ""),
            "history": ("H*" if node.get("deep") else "H") if kind == "history" else None,
            "initial": list((node.get("initial") or {}).get("targets", [])),
            "kind": kind,
        }
    return states


def chart_initial(definition: Mapping[str, Any]) -> str | None:
    """The first state the chart's initial transition enters."""
    targets = definition["chart"].get("initial") or []
    return str(targets[0]) if targets else None


def microstep_transitions(record_meta: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, event) of every transition a chart record's microsteps took."""
    taken = []
    for step in record_meta.get("microsteps") or ():
        for t in step.get("transitions", ()):
            if t.get("source") is None:
                continue  # the initial transition of the chart
            event = str(t.get("event") or ALWAYS)
            for target in t.get("targets") or [t["source"]]:
                taken.append((str(t["source"]), str(target), event))
    return taken


def microstep_entries(record_meta: Mapping[str, Any]) -> list[str]:
    """Every state a chart record's microsteps entered, in order."""
    return [s for step in record_meta.get("microsteps") or () for s in step.get("entered", ())]
