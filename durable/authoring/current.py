"""The step being executed, as a context variable: :func:`durable.current_step`."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = ["StepInfo", "current_step", "enter_step", "leave_step"]


@dataclass(frozen=True)
class StepInfo:
    """The step being executed, as seen from inside the step function.

    Attributes:
        run_id: the run.
        workflow: the workflow's name.
        key: the step key.
        position: the step's index in the run's call order.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        idempotency_key: ``"<run id>:<step key>"``, the same on every attempt and
            after a crash: pass it to external APIs so a repeated call is recognized.
    """

    run_id: str
    workflow: str
    key: str
    position: int
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and crashes: ``"<run id>:<step key>"``."""
        return f"{self.run_id}:{self.key}"


_CURRENT_STEP: ContextVar[StepInfo | None] = ContextVar("durable_current_step", default=None)


def current_step() -> StepInfo | None:
    """The step being executed (inside a step function), else None."""
    return _CURRENT_STEP.get()


def enter_step(info: StepInfo) -> Token[StepInfo | None]:
    """Make ``info`` what :func:`current_step` returns, until :func:`leave_step`."""
    return _CURRENT_STEP.set(info)


def leave_step(token: Token[StepInfo | None]) -> None:
    """Undo the :func:`enter_step` that returned ``token``."""
    _CURRENT_STEP.reset(token)
