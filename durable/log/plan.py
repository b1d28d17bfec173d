"""A workflow's step plan as stored with each run: how many steps, which, and how sure.

Made by static analysis of the workflow's source (:mod:`durable.authoring.analysis`)
and read back by whoever reports progress, with or without the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepPlan:
    """The steps a workflow function calls, as far as its source tells.

    Attributes:
        total_steps: number of step call sites, each counted once; None without source.
        approximate: True when loops, branches or missing source make the total a guess.
        steps: the step keys in source order (computed keys shown with ``{...}``).
    """

    total_steps: int | None
    approximate: bool
    steps: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The form stored in a run's context."""
        return {
            "total_steps": self.total_steps,
            "approximate": self.approximate,
            "steps": list(self.steps),
        }

    @classmethod
    def from_json(cls, data: Any) -> StepPlan:
        """Read the stored form back (tolerating a missing or foreign value)."""
        if not isinstance(data, dict):
            return cls(None, True)
        total = data.get("total_steps")
        return cls(
            total if isinstance(total, int) else None,
            bool(data.get("approximate", True)),
            tuple(str(s) for s in data.get("steps", ())),
        )
