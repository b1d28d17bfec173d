"""What code inside a run reads from context variables: the step being executed
(:func:`durable.current_step`) and the executing worker's credentials
(:func:`durable.credentials`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "StepInfo",
    "credentials",
    "current_step",
    "enter_step",
    "leave_step",
    "read_only",
    "using_credentials",
]


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


_CREDENTIALS: ContextVar[Any] = ContextVar("durable_credentials", default=None)


def credentials() -> Any:
    """The credentials of the worker (or engine) executing this run, else None.

    Whatever was passed as ``Worker(..., credentials=...)`` (a mapping comes back as
    a read-only mapping). Read it inside workflow code or a step function; it is
    never written to the run's log or to log lines.
    """
    return _CREDENTIALS.get()


def read_only(value: Any) -> Any:
    """``value``, with a mapping copied into a read-only mapping."""
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


@contextmanager
def using_credentials(value: Any) -> Iterator[None]:
    """Make ``value`` what :func:`credentials` returns inside the block (and its tasks)."""
    token = _CREDENTIALS.set(value)
    try:
        yield
    finally:
        _CREDENTIALS.reset(token)
