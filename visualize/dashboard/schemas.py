"""Where a form's schema comes from: a machine's event payload, or what a run waits for."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

import statewf
from visualize.api import definition_for
from visualize.errors import VisualizeError


def _states(states: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, state in states.items():
        if not isinstance(state, Mapping):
            continue
        path = f"{prefix}{name}"
        yield path, state
        if isinstance(state.get("states"), Mapping):  # a compound state of a statechart
            yield from _states(state["states"], f"{path}.")


def _active(path: str, configuration: tuple[str, ...]) -> bool:
    return any(c == path or c.startswith(f"{path}.") for c in configuration)


def payload_schemas(engine: statewf.Engine, snapshot: statewf.Instance) -> dict[str, Any]:
    """The payload JSON schema of each event of the instance's machine (None: no schema).

    Events from the instance's active states win over the same event elsewhere.
    """
    try:
        definition = definition_for(engine, snapshot.machine, snapshot.machine_version)
    except VisualizeError:
        return {}
    found: dict[str, Any] = {}
    configuration = snapshot.configuration or (snapshot.state,)
    ordered = sorted(
        _states(definition.get("states") or {}), key=lambda s: not _active(s[0], configuration)
    )
    for _path, state in ordered:
        for event, options in (state.get("on") or {}).items():
            if event in found or not isinstance(options, list) or not options:
                continue
            first = options[0] if isinstance(options[0], Mapping) else {}
            found[event] = first.get("payload")
    return found


def answer_schema(waiting: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of what a run waits for, when its model is already imported here.

    The stored ``module:Name`` is looked up only among modules this process has
    imported (the application's), never imported because the database names it.
    """
    path = str((waiting or {}).get("schema") or "")
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None or not qualname:
        return None
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target.model_json_schema()
    return None


def task_answer_schema(waiting: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The JSON schema of a person's answer to a waiting approval or human task, if any.

    It is stored with the wait, so it needs no model imported here.
    """
    task = (waiting or {}).get("task")
    schema = task.get("answer_json_schema") if isinstance(task, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def wait_form_schema(waiting: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The schema of the form that answers a wait: a person's answer for a human task or
    approval, else the payload of the event it waits for."""
    task = (waiting or {}).get("task")
    return task_answer_schema(waiting) if isinstance(task, Mapping) else answer_schema(waiting)
