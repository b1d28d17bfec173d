"""Plain records: the instance snapshot, transition log rows, pages, effect calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

#: Status of a machine instance that can still take events.
ACTIVE = "active"
#: Status of a machine instance that reached a final state.
FINAL = "final"

#: Log-row kinds written by the machine engine; durable runs add their own.
KIND_CREATE = "create"
KIND_EVENT = "event"
KIND_TIMER = "timer"


def state_label(configuration: tuple[str, ...]) -> str:
    """The display form of a state configuration: one path, or paths joined by ','."""
    return ",".join(configuration)


class Instance(BaseModel):
    """The snapshot of one instance: the result of folding its transition log."""

    model_config = ConfigDict(frozen=True)

    id: str
    machine: str
    machine_version: str
    kind: str = "machine"
    state: str
    configuration: tuple[str, ...]
    context: dict[str, Any]
    status: str
    version: int = Field(description="number of rows in the instance's log")
    resource_id: str | None = None
    idempotency_key: str | None = None
    wake_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class TransitionRecord(BaseModel):
    """One row of the append-only transition log, numbered from 1 per instance."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    seq: int
    kind: str
    event: str | None = None
    source: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    payload: Any = None
    context_set: dict[str, Any] = Field(default_factory=dict)
    context_unset: tuple[str, ...] = ()
    status: str
    wake_at: datetime | None = None
    key: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Page(BaseModel, Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next one."""

    items: list[T]
    next_cursor: str | None = None


class EffectCall(BaseModel):
    """What an effect function receives when the outbox dispatches it."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    machine: str
    seq: int
    name: str
    event: str | None
    state: str
    context: dict[str, Any]
    payload: Any = None
    attempt: int
    idempotency_key: str = Field(description="stable across retries: instance:seq:position")


class EffectRecord(BaseModel):
    """An outbox row: an effect recorded with a transition and its dispatch status."""

    model_config = ConfigDict(frozen=True)

    id: int
    instance_id: str
    seq: int
    position: int
    name: str
    status: str
    attempts: int
    last_error: str | None = None
    available_at: datetime
    created_at: datetime
    done_at: datetime | None = None
