"""statewf: durable state machines on an event-sourced PostgreSQL/SQLite transition log."""

from importlib.metadata import PackageNotFoundError, version

from statewf.chart.model import Cancel, History, In, Raise, Send
from statewf.engine import Engine
from statewf.errors import (
    ActionFailed,
    ConcurrencyConflict,
    DuplicateInstance,
    EffectFailed,
    EventDiscarded,
    EventRejected,
    GuardRejected,
    InstanceFinished,
    InstanceNotFound,
    InvalidInput,
    InvalidPayload,
    MachineNotRegistered,
    MachineVersionConflict,
    MacrostepLimit,
    MigrationRejected,
    SpecError,
    SpecWarning,
    StatewfError,
    StoreError,
    UnknownEvent,
)
from statewf.hooks import Effect, Registry, effect
from statewf.loader import load_machine
from statewf.records import EffectCall, Instance, Page, TransitionRecord
from statewf.spec import Machine, State, Transition, transition

try:
    __version__ = version("statewf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ActionFailed",
    "Cancel",
    "ConcurrencyConflict",
    "DuplicateInstance",
    "Effect",
    "EffectCall",
    "EffectFailed",
    "Engine",
    "EventDiscarded",
    "EventRejected",
    "GuardRejected",
    "History",
    "In",
    "Instance",
    "InstanceFinished",
    "InstanceNotFound",
    "InvalidInput",
    "InvalidPayload",
    "Machine",
    "MachineNotRegistered",
    "MachineVersionConflict",
    "MacrostepLimit",
    "MigrationRejected",
    "Page",
    "Raise",
    "Registry",
    "Send",
    "SpecError",
    "SpecWarning",
    "State",
    "StatewfError",
    "StoreError",
    "Transition",
    "TransitionRecord",
    "UnknownEvent",
    "__version__",
    "effect",
    "load_machine",
    "transition",
]
