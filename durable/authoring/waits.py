"""What a wait waits for (sleeps, events, pauses, polls) and what it returns.

``ctx.step.sleep``, ``wait_for``, ``pause``, ``poll`` and ``approval`` build a
:class:`WaitSpec`; :mod:`durable.execution.waiting` finishes the wait or suspends
the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from durable.log.records import KIND_POLL, KIND_WAIT

#: The shortest interval between two checks of a poll.
MIN_POLL_INTERVAL = 1.0


class PollResult(BaseModel):
    """What ``ctx.step.poll`` returns: the truthy value found, or a timeout."""

    timed_out: bool
    data: Any = None


class Approval(BaseModel):
    """What ``ctx.step.approval`` returns: the reviewer's decision (and answer, if asked)."""

    approved: bool
    reviewer: str | None = None
    reason: str | None = None
    #: the reviewer's answer: an instance of the approval's ``schema`` when it has one
    answer: Any = None


class TaskAnswer(BaseModel):
    """The event that completes ``ctx.step.human_task``: the reviewer's data and who sent it."""

    data: Any = None
    reviewer: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class WaitSpec:
    """What a wait waits for (built by :class:`durable.Steps`)."""

    kind: str
    seconds: float | None = None
    until: datetime | None = None
    event: str | None = None
    schema: type[BaseModel] | None = None
    fn: Callable[..., Any] | None = None
    interval: float | None = None
    #: what a wait for an event returns when its timeout passes first (not stored)
    timeout_value: Any = None
    #: a human task's details (type, prompt, context, assignee), stored with the wait
    task: dict[str, Any] | None = None
    #: the model of a human task's answer, checked in the field ``answer_field``
    answer: type[BaseModel] | None = None
    answer_field: str = "answer"

    def validate(self, data: Any) -> None:
        """Raise ``ValidationError`` unless ``data`` fits the wait's schema (and answer)."""
        if self.schema is not None:
            self.schema.model_validate(data)
        given = data.get(self.answer_field) if isinstance(data, dict) else None
        if self.answer is not None and given is not None:
            self.answer.model_validate(given)

    def result(self, stored: Any, *, timed_out: bool = False) -> Any:
        """The value the wait returns for its stored outcome."""
        if self.kind == KIND_POLL:
            return PollResult.model_validate(stored)
        if timed_out and self.kind == KIND_WAIT:
            return self.timeout_value
        if stored is not None and self.schema is not None:
            value = self.schema.model_validate(stored)
            given = getattr(value, self.answer_field, None)
            if self.answer is not None and given is not None:
                answer = self.answer.model_validate(given)
                value = value.model_copy(update={self.answer_field: answer})
            return value
        return stored
