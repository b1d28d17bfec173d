"""The one exception hierarchy of statewf.

Every error statewf raises on purpose derives from :class:`StatewfError`. Errors carry
structured attributes (``instance_id``, ``event``, ``state``) so callers can branch on
them, and their message says what happened and what to do next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class StatewfError(Exception):
    """Root of every error raised by statewf."""

    def __init__(
        self,
        message: str,
        *,
        instance_id: str | None = None,
        event: str | None = None,
        state: str | None = None,
        cli_message: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The same problem told to a command-line user (what to type rather than
        #: what to call); the ``statewf`` command prints it instead of ``message``.
        self.cli_message = cli_message or message
        self.instance_id = instance_id
        self.event = event
        self.state = state
        self.details = details


# ---------------------------------------------------------------- definition time


class SpecWarning(UserWarning):
    """A definition loads but looks wrong (e.g. an SCXML document with unreachable states)."""


class SpecError(StatewfError):
    """A machine or workflow definition is malformed; raised when it is built or registered."""


class MachineVersionConflict(SpecError):
    """A changed machine was registered under a name and version already stored."""


class MachineNotRegistered(StatewfError):
    """An operation named a machine (or machine version) the engine does not know."""


# ---------------------------------------------------------------- run time


class InvalidInput(StatewfError):
    """An argument is malformed: a bad id, event name, context or cursor."""


class InstanceNotFound(StatewfError):
    """No instance with that id exists (or it belongs to another resource)."""


class DuplicateInstance(StatewfError):
    """An instance with the caller-chosen id already exists."""


class EventRejected(StatewfError):
    """An event could not be applied; nothing was changed."""


class UnknownEvent(EventRejected):
    """The event has no transition from the instance's current state."""


class GuardRejected(EventRejected):
    """Every transition for the event had a guard that returned false."""


class InvalidPayload(EventRejected):
    """The event payload failed validation against its schema, or is too large."""


class InstanceFinished(EventRejected):
    """The instance is in a final state and accepts no more events."""


class EventDiscarded(EventRejected):
    """No transition took the event and the machine discards such events (SCXML documents).

    The engine does not raise it: ``send`` returns the unchanged snapshot.
    """


class MacrostepLimit(EventRejected):
    """A statechart macrostep did not settle (an eventless or raise loop); nothing changed."""


class ActionFailed(EventRejected):
    """A guard, entry/exit or transition action raised; the event was not applied."""


class MigrationRejected(StatewfError):
    """An instance could not move to another machine version; nothing was changed.

    ``details`` hold ``machine``, ``from_version`` and ``to_version``.
    """


class ConcurrencyConflict(StatewfError):
    """Another writer changed the instance first; retry the operation."""


class StoreError(StatewfError):
    """The database failed; the original driver error is the ``__cause__``."""

    @property
    def sqlstate(self) -> str | None:
        """The database's SQLSTATE code, when it gave one."""
        code = self.details.get("sqlstate")
        return str(code) if code else None

    @property
    def transient(self) -> bool:
        """Whether trying again may succeed: the database was away or busy, it did not
        refuse the statement (SQLSTATE classes 22 data, 23 constraint, 42 syntax)."""
        return not (self.sqlstate or "").startswith(("22", "23", "42"))


class EffectFailed(StatewfError):
    """An outbox effect raised when dispatched; it stays pending and is retried."""


def validation_summary(exc: ValidationError, *, root: str = "(root)") -> str:
    """The first five problems of a pydantic validation error, one ``where: what`` each.

    ``root`` names the value itself when a problem is not inside a field.
    """
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or root
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
