"""A machine as JSON-able data: what ``register`` stores, and what its fingerprint hashes."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from statewf.chart.describe import chart_definition
from statewf.errors import MachineVersionConflict
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


def digest(definition: Any) -> str:
    """A definition's fingerprint: a hash of its JSON with sorted keys."""
    text = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def renamed(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every string that names a hook (or ``effect:`` one) renamed."""
    if isinstance(value, str):
        if value in names:
            return names[value]
        return value
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    if isinstance(value, dict):
        return {k: renamed(v, names) for k, v in value.items()}
    return value


def earlier_fingerprint(machine: Machine, earlier_names: dict[str, str]) -> str | None:
    """The fingerprint of ``machine`` with its lambda hooks named as releases before lambda
    labels named them (``<lambda>``), or None if it has none; a machine stored by those
    releases under this version still registers (see :meth:`statewf.Engine.register`)."""
    if not earlier_names:
        return None
    return digest(renamed(machine.to_definition(), earlier_names))


def version_conflict(machine: Machine, stored: str) -> MachineVersionConflict:
    """The error for a changed ``machine`` registered under a name and version stored with
    the fingerprint ``stored``."""
    return MachineVersionConflict(
        f"machine {machine.name!r} version {machine.version!r} is already registered "
        f"with a different definition (stored fingerprint {stored}, this one "
        f"{machine.fingerprint}); give the changed machine a new version= so existing "
        "instances keep the definition they were created with (and move them with "
        "engine.migrate or `statewf instances migrate` if they should change)",
        machine=machine.name,
        version=machine.version,
    )
