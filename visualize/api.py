"""The diagram functions users call: a machine, an instance now (or at seq N), a history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from statewf.engine import Engine
from statewf.errors import MachineNotRegistered
from statewf.spec import Machine
from visualize.diagram import Diagram
from visualize.errors import VisualizeError
from visualize.extract import history_graph, instance_graph, machine_graph


def machine_diagram(machine: Machine | Mapping[str, Any]) -> Diagram:
    """The diagram of a machine, from a ``Machine`` or a stored definition dict."""
    return Diagram(machine_graph(machine))


def definition_for(engine: Engine, name: str, version: str | None = None) -> dict[str, Any]:
    """A machine's definition: the registered machine's, else the one stored in the database.

    Without ``version`` the registered latest version wins; among stored ones, the
    highest version (compared as numbers when they are numbers).
    """
    try:
        return engine.machine(name, version).to_definition()
    except MachineNotRegistered:
        pass
    stored = [
        d
        for d in engine.stored_definitions()
        if d.get("name") == name and (version is None or str(d.get("version")) == version)
    ]
    if not stored:
        known = sorted({f"{d.get('name')}@{d.get('version')}" for d in engine.stored_definitions()})
        which = f"{name!r} version {version!r}" if version else repr(name)
        raise VisualizeError(
            f"no machine {which} is registered or stored in this database "
            f"(stored: {', '.join(known) or 'none'}); register it or check the name"
        )
    return max(stored, key=lambda d: _version_key(str(d.get("version"))))


def _version_key(version: str) -> tuple[int, int, str]:
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def instance_diagram(
    engine: Engine, instance_id: str, *, seq: int | None = None, resource_id: str | None = None
) -> Diagram:
    """The instance's machine with its current state highlighted (as of ``seq`` if given)."""
    snapshot = (
        engine.get(instance_id, resource_id=resource_id)
        if seq is None
        else engine.state_at(instance_id, seq, resource_id=resource_id)
    )
    _require_machine(snapshot.kind, instance_id)
    definition = definition_for(engine, snapshot.machine, snapshot.machine_version)
    return Diagram(instance_graph(definition, snapshot, seq=seq))


def history_diagram(
    engine: Engine, instance_id: str, *, seq: int | None = None, resource_id: str | None = None
) -> Diagram:
    """The instance's machine with the path taken: edge counts and order of first use."""
    snapshot = engine.get(instance_id, resource_id=resource_id)
    _require_machine(snapshot.kind, instance_id)
    if seq is not None:  # validated with the engine's own message
        engine.state_at(instance_id, seq, resource_id=resource_id)
    definition = definition_for(engine, snapshot.machine, snapshot.machine_version)
    records = engine.history(instance_id, resource_id=resource_id)
    return Diagram(history_graph(definition, records, seq=seq))


def _require_machine(kind: str, instance_id: str) -> None:
    if kind != "machine":
        raise VisualizeError(
            f"instance {instance_id!r} is a {kind} run, not a machine instance; "
            "draw it with visualize.run_diagram(workflow_engine, run_id)",
            instance_id=instance_id,
        )
