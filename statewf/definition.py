"""A machine as JSON-able data: what ``register`` stores, and what its fingerprint hashes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statewf.chart.describe import chart_definition
from statewf.hooks import Hook

if TYPE_CHECKING:
    from statewf.spec import Machine


def _hook_def(hook: Hook) -> str:
    return f"effect:{hook.name}" if hook.is_effect else hook.name


def machine_definition(machine: Machine) -> dict[str, Any]:
    """The definition of a flat machine (states by name) or a chart (nodes by path)."""
    if machine.chart is not None:
        return {
            "name": machine.name,
            "version": machine.version,
            "initial": machine.initial,
            "description": machine.description,
            "context": machine.context.model_json_schema() if machine.context else None,
            "chart": chart_definition(machine.chart),
        }
    states: dict[str, Any] = {}
    for name, state in machine.states.items():
        on: dict[str, Any] = {}
        for event, options in machine.transitions[name].items():
            on[event] = [
                {
                    "target": t.target,
                    "guards": [h.name for h in t.guards],
                    "unless": [h.name for h in t.unless],
                    "actions": [_hook_def(h) for h in t.actions],
                    "payload": t.payload.model_json_schema() if t.payload else None,
                    "description": t.description,
                }
                for t in options
            ]
        states[name] = {
            "on": on,
            "on_enter": [_hook_def(h) for h in state.on_enter],
            "on_exit": [_hook_def(h) for h in state.on_exit],
            "final": state.final,
            "description": state.description,
        }
        if machine.timers.get(name):
            states[name]["after"] = [
                {
                    "label": t.label,
                    "seconds": t.delay.total_seconds(),
                    "target": t.transition.target,
                    "guards": [h.name for h in t.transition.guards],
                    "unless": [h.name for h in t.transition.unless],
                    "actions": [_hook_def(h) for h in t.transition.actions],
                    "description": t.transition.description,
                }
                for t in machine.timers[name]
            ]
    return {
        "name": machine.name,
        "version": machine.version,
        "initial": machine.initial,
        "description": machine.description,
        "context": machine.context.model_json_schema() if machine.context else None,
        "states": states,
    }
