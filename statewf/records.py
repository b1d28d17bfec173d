"""Plain records: the instance snapshot, transition log rows, pages, effect calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")

#: Status of a machine instance that can still take events.
ACTIVE = "active"
#: Status of a machine instance that reached a final state.
FINAL = "final"

#: Log-row kinds written by the machine engine; durable runs add their own.
KIND_CREATE = "create"
KIND_EVENT = "event"
KIND_TIMER = "timer"
#: A row that moved a machine instance to another version of its machine (``Engine.migrate``).
KIND_MIGRATE = "migrate"


def state_label(configuration: tuple[str, ...]) -> str:
    """The display form of a state configuration: one path, or paths joined by ','."""
    return ",".join(configuration)


class PendingTimer(BaseModel):
    """A delayed event of a statechart instance: an ``after`` of an active state or a ``send``."""

    model_config = ConfigDict(frozen=True)

    id: str
    event: str
    due_at: datetime
    state: str | None = Field(default=None, description="the state whose exit cancels it")
    label: str = ""


class Instance(BaseModel):
    """The snapshot of one instance: the result of folding its transition log.

    ``configuration`` holds the active leaf states as dotted paths in document order
    (one name for a flat machine). A statechart instance also keeps its ``history``
    values (history state path to the paths it restores), its pending ``timers`` and
    ``state_ids``, the ids of the active leaf states (SCXML ids for a loaded document).
    """

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
    history: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    timers: tuple[PendingTimer, ...] = ()
    state_ids: tuple[str, ...] = ()
    chart: bool = False

    @model_validator(mode="before")
    @classmethod
    def _stored_configuration(cls, data: Any) -> Any:
        # A statechart's stored configuration is an object (paths, ids, history, timers);
        # a flat machine's is the list of its one state, as in every release before.
        if isinstance(data, dict) and isinstance(data.get("configuration"), dict):
            stored = data["configuration"]
            data = {**data, **chart_fields(stored)}
        return data

    def stored_configuration(self) -> Any:
        """The configuration column's value: a list for flat machines, an object for charts."""
        if not self.chart:
            return list(self.configuration)
        return chart_value(self)

    def matches(self, state: str) -> bool:
        """True if ``state`` (a dotted path, a state's name or id) is active, ancestors included."""
        needle = f".{state}."
        return state in self.state_ids or any(needle in f".{p}." for p in self.configuration)


def chart_value(snapshot: Instance) -> dict[str, Any]:
    """The JSON form of a chart instance's configuration, history and timers."""
    value: dict[str, Any] = {"active": list(snapshot.configuration)}
    if snapshot.state_ids != snapshot.configuration:
        value["ids"] = list(snapshot.state_ids)
    if snapshot.history:
        value["history"] = {k: list(v) for k, v in snapshot.history.items()}
    if snapshot.timers:
        value["timers"] = [t.model_dump(mode="json") for t in snapshot.timers]
    return value


def chart_fields(stored: dict[str, Any]) -> dict[str, Any]:
    """The snapshot fields a stored chart value holds (the inverse of :func:`chart_value`)."""
    active = tuple(stored.get("active", ()))
    return {
        "configuration": active,
        "state_ids": tuple(stored.get("ids", active)),
        "history": {k: tuple(v) for k, v in stored.get("history", {}).items()},
        "timers": tuple(PendingTimer.model_validate(t) for t in stored.get("timers", ())),
        "chart": True,
    }


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

    @property
    def source_state(self) -> str:
        """The configuration before this row as one display string (``"a"``, ``"p.x,p.y"``)."""
        return state_label(self.source) if self.source else ""

    @property
    def target_state(self) -> str:
        """The configuration after this row, as one display string ("" if it did not move)."""
        return state_label(self.target) if self.target else ""


#: The fields an event row built by :func:`event_record` says were set (``key`` was not).
_EVENT_FIELDS_SET = frozenset(TransitionRecord.model_fields) - {"key"}
_new = object.__new__
_set = object.__setattr__


def event_record(
    instance_id: str,
    seq: int,
    event: str,
    source: tuple[str, ...],
    target: tuple[str, ...],
    payload: Any,
    context_set: dict[str, Any],
    context_unset: tuple[str, ...],
    status: str,
    wake_at: datetime | None,
    meta: dict[str, Any],
    created_at: datetime,
) -> TransitionRecord:
    """The event row ``TransitionRecord(...)`` of these fields (all but ``key``) builds,
    without its validation: for values the engine made, each already of its field's type
    (the ids, states and names from validated snapshots and specs, the context change
    from a JSON round trip).

    Equal to the validated one, field for field, in ``repr``, dumps and the fields set.
    The values from outside are checked: an instant that is not a ``datetime`` (a
    clock's), an event that is not a ``str``, a context change that is not a dict of
    ``str`` keys go through the validation, which converts or refuses them as before.
    """
    if not (
        type(created_at) is datetime
        and (wake_at is None or type(wake_at) is datetime)
        and type(event) is str
        and type(context_set) is dict
        and (not context_set or all(type(k) is str for k in context_set))
    ):
        return TransitionRecord(
            instance_id=instance_id,
            seq=seq,
            kind=KIND_EVENT,
            event=event,
            source=source,
            target=target,
            payload=payload,
            context_set=context_set,
            context_unset=context_unset,
            status=status,
            wake_at=wake_at,
            meta=meta,
            created_at=created_at,
        )
    record = _new(TransitionRecord)
    _set(
        record,
        "__dict__",
        {
            "instance_id": instance_id,
            "seq": seq,
            "kind": KIND_EVENT,
            "event": event,
            "source": source,
            "target": target,
            "payload": payload,
            "context_set": dict(context_set),  # validation's copy: the row owns its dict
            "context_unset": context_unset,
            "status": status,
            "wake_at": wake_at,
            "key": None,
            "meta": meta,
            "created_at": created_at,
        },
    )
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_fields_set__", set(_EVENT_FIELDS_SET))
    _set(record, "__pydantic_private__", None)
    return record


class StepRow(NamedTuple):
    """A log row read for replay only: the fields a replay and a step timeline read.

    A long run's log is mostly rows of one kind (a durable run's finished steps);
    reading them for replay needs their key, payload, meta and time, not their
    configurations or context change, so :func:`statewf.store.runs.replay_logs` gives
    them in this lighter form (equal, field for field, to the record's values) and
    every other row as a full :class:`TransitionRecord`.
    """

    seq: int
    kind: str
    key: str | None
    payload: Any
    meta: dict[str, Any]
    created_at: datetime


#: The ``kind`` of a :class:`ReplaySnapshot` (never a log row's kind).
KIND_REPLAY_SNAPSHOT = "replay_snapshot"


class ReplaySnapshot(NamedTuple):
    """A derived document of what replay needs from a run's log up to ``seq``, read
    first in place of those rows (see :func:`statewf.store.runs.replay_logs`).

    ``document`` is the stored text, undecoded: its format is the workflow layer's
    (:mod:`durable.log.snapshot`); a reader that cannot use it reads the whole log.
    """

    seq: int
    document: str
    kind: str = KIND_REPLAY_SNAPSHOT


#: A row of a log read for replay: a full record, a step read light, or the run's
#: replay snapshot (first, in place of the rows it covers).
ReplayRow = TransitionRecord | StepRow | ReplaySnapshot


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
