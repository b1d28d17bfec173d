"""Reading a run's log into what replay needs: recorded steps by position. Pure.

A run's log holds one ``step`` (or ``step_failed``) row per finished step and one
``retry`` row per failed attempt that was retried, each with the step's *position*:
its index in the order the workflow code called steps. Replaying the code asks
for steps in the same order, so the position is the step's identity in the log, and
the key recorded there must equal the key the code asks for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durable.records import KIND_RETRY, KIND_STEP, KIND_STEP_FAILED, RunError
from statewf.records import TransitionRecord


@dataclass(frozen=True)
class RecordedStep:
    """A finished step as the log has it."""

    position: int
    key: str
    ok: bool
    result: Any = None
    model: str | None = None
    error: RunError | None = None
    attempts: int = 1


@dataclass(frozen=True)
class RecordedRetries:
    """Failed attempts of a step that had not finished when the log was read."""

    attempts: int
    retry_at: datetime | None


@dataclass
class History:
    """Everything replay needs from one run's log."""

    steps: dict[int, RecordedStep] = field(default_factory=dict)
    retries: dict[int, RecordedRetries] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_log(cls, records: Iterable[TransitionRecord]) -> History:
        """Index a log's step rows by position."""
        history = cls()
        for record in records:
            if record.kind not in (KIND_STEP, KIND_STEP_FAILED, KIND_RETRY):
                continue
            position = int(record.meta["position"])
            key = record.key or ""
            history.positions[key] = position
            attempt = int(record.meta.get("attempt", 1))
            if record.kind == KIND_RETRY:
                retry_at = record.meta.get("retry_at")
                history.retries[position] = RecordedRetries(
                    attempt, datetime.fromisoformat(retry_at) if retry_at else None
                )
                continue
            payload = record.payload if isinstance(record.payload, dict) else {}
            if record.kind == KIND_STEP:
                history.steps[position] = RecordedStep(
                    position,
                    key,
                    True,
                    payload.get("result"),
                    record.meta.get("model"),
                    attempts=attempt,
                )
            else:
                history.steps[position] = RecordedStep(
                    position,
                    key,
                    False,
                    error=RunError.model_validate(payload["error"]),
                    attempts=attempt,
                )
            history.retries.pop(position, None)
        return history
