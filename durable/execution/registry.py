"""The workflows one engine can execute, by name and version.

An engine's executor builds a run's executor from the registered code, and a claim
asks it which workflow versions to take and what context a run started without the
code lacks (its step plan and deadline).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable.authoring.pipeline import Pipeline
from durable.authoring.workflow import Workflow
from durable.errors import WorkflowNotRegistered
from statewf.errors import InvalidInput
from statewf.records import Instance

WorkflowLike = Workflow[Any, Any] | Pipeline


class Registry:
    """Registered workflows: several versions of one name may coexist; the last is the latest."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str], Workflow[Any, Any]] = {}
        self._latest: dict[str, Workflow[Any, Any]] = {}

    def register(self, *workflows: WorkflowLike) -> None:
        """Make workflows executable (several versions of one name may coexist)."""
        for item in workflows:
            wf = item.workflow if isinstance(item, Pipeline) else item
            if not isinstance(wf, Workflow):
                raise InvalidInput(
                    f"register() takes workflows made with @durable.workflow or "
                    f"durable.Pipeline, got {item!r}"
                )
            key = (wf.name, wf.version)
            known = self._by_version.get(key)
            if known is not None and known is not wf:
                raise InvalidInput(
                    f"workflow {wf.name!r} version {wf.version!r} is registered twice with "
                    "different code; give the new one another version="
                )
            self._by_version[key] = wf
            self._latest[wf.name] = wf

    def workflows(self) -> list[Workflow[Any, Any]]:
        """The registered workflows, by name and version."""
        return [self._by_version[k] for k in sorted(self._by_version)]

    def versions(self) -> list[tuple[str, str]]:
        """The registered (name, version) pairs, sorted."""
        return sorted(self._by_version)

    def definition(self, name: str, version: str | None = None) -> Workflow[Any, Any]:
        """The workflow ``name`` (its latest version, or ``version``); raises if unknown."""
        wf = self._latest.get(name) if version is None else self._by_version.get((name, version))
        if wf is None:
            known = ", ".join(f"{n}@{v}" for n, v in sorted(self._by_version)) or "none"
            which = f"{name!r}" + (f" version {version!r}" if version else "")
            raise WorkflowNotRegistered(
                f"workflow {which} is not registered with this engine (registered: {known}); "
                "pass it in WorkflowEngine(..., workflows=[...])",
                machine=name,
            )
        return wf

    def resolve(self, workflow: str | WorkflowLike) -> Workflow[Any, Any]:
        """The registered workflow a name, workflow or pipeline stands for; raises if unknown."""
        if isinstance(workflow, str):
            return self.definition(workflow)
        wf = workflow.workflow if isinstance(workflow, Pipeline) else workflow
        self.definition(wf.name, wf.version)
        return wf

    def prepare(self, snapshot: Instance) -> dict[str, Any]:
        """Context a claim row adds to a run started by a client without the code."""
        wf = self._by_version.get((snapshot.machine, snapshot.machine_version))
        if wf is None:
            return {}
        fields: dict[str, Any] = {}
        if "plan" not in snapshot.context:
            fields["plan"] = wf.plan.to_json()
        if wf.timeout is not None and "deadline" not in snapshot.context:
            deadline = snapshot.created_at + timedelta(seconds=wf.timeout)
            fields["deadline"] = deadline.isoformat()
        return fields
