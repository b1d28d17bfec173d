"""Running hooks for a decision: the context they see, the payload, the effects they record.

Shared by the flat core (:mod:`statewf.decide`) and the statechart core
(:mod:`statewf.macrostep`); pure, like both.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

import pydantic_core
from pydantic import BaseModel, ValidationError

from statewf.adapter import CompiledMachine
from statewf.aio import wait_for_hook
from statewf.errors import ActionFailed, InvalidInput, InvalidPayload
from statewf.hooks import ASYNC_GUARD_REASON, Hook
from statewf.records import Instance, TransitionRecord
from statewf.spec import ResolvedTransition
from statewf.values import stored_json, too_deep

#: Default cap on the JSON size of one event payload or context.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


class Decision(NamedTuple):
    """What an accepted event does: the record to append, the new snapshot, the effects.

    A named tuple, not a frozen dataclass: one is made per send, and a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` (~0.5 us).
    """

    record: TransitionRecord
    snapshot: Instance
    effects: tuple[str, ...]


class HookRun:
    """Holds one decision's context and payload while ``transitions`` drives the hooks."""

    def __init__(
        self, where: str, ctx: Any, payload: Any, *, instance_id: str, event: str | None, state: str
    ) -> None:
        self.where = where
        self.ctx = ctx
        self.payload = payload
        self.instance_id = instance_id
        self.event = event
        self.state = state
        self.effects: list[str] = []
        self.changed = False
        self.transition: ResolvedTransition | None = None

    def _failed(self, kind: str, hook: Hook, exc: Exception) -> ActionFailed:
        return ActionFailed(
            f"{kind} {hook.name!r} raised {type(exc).__name__}: {exc} ({self.where}); "
            "the event was not applied and nothing changed. Fix the hook or the input "
            "and send the event again.",
            instance_id=self.instance_id,
            event=self.event,
            state=self.state,
            hook=hook.name,
        )

    def check(self, hook: Hook) -> bool:
        try:
            result = hook.fn(self.ctx, self.payload)
            _not_awaitable(result, "guard", hook)
            return bool(result)
        except Exception as exc:
            raise self._failed("guard", hook, exc) from exc

    def run(self, hook: Hook) -> None:
        if hook.is_effect:
            self.effects.append(hook.name)
            return
        try:
            result = hook.fn(self.ctx, self.payload)
            if inspect.isawaitable(result):
                result = wait_for_hook(result, what=f"action {hook.name!r}")
            self.changed = True
            if isinstance(result, Mapping):
                for key, value in result.items():
                    if isinstance(self.ctx, dict):
                        self.ctx[key] = value
                    else:
                        setattr(self.ctx, key, value)
        except Exception as exc:
            raise self._failed("action", hook, exc) from exc
        if result is None or isinstance(result, Mapping):
            return
        if isinstance(result, BaseModel):
            self.ctx = result
        else:
            raise ActionFailed(
                f"action {hook.name!r} returned {type(result).__name__} ({self.where}); an "
                "action returns None (after changing ctx in place), a dict of context "
                "updates, or a new context model",
                instance_id=self.instance_id,
                event=self.event,
                state=self.state,
                hook=hook.name,
            )

    def taken(self, transition: ResolvedTransition) -> None:
        self.transition = transition


def _not_awaitable(result: Any, kind: str, hook: Hook) -> None:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(f"{kind} {hook.name!r} returned an awaitable; {ASYNC_GUARD_REASON}")


def to_json(value: Any, *, what: str, max_bytes: int) -> Any:
    """``value`` as plain JSON data, or :class:`InvalidPayload` if it cannot be stored."""
    return stored_json(value, what=what, max_bytes=max_bytes, error=InvalidPayload)


def summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_context(compiled: CompiledMachine, data: Mapping[str, Any]) -> Any:
    """The context object hooks see: the machine's model, or a private copy of the dict."""
    model = compiled.spec.context
    # A private copy: hooks must never reach the stored snapshot's objects. Contexts
    # are JSON data, so a JSON round trip copies them exactly, and fast.
    data = pydantic_core.from_json(pydantic_core.to_json(data))
    return data if model is None else model.model_validate(data)


def dump_context(compiled: CompiledMachine, ctx: Any, where: str, max_bytes: int) -> Any:
    model = compiled.spec.context
    if model is not None:
        if not isinstance(ctx, model):
            ctx = ctx.model_dump() if isinstance(ctx, BaseModel) else ctx
        try:
            checked = model.model_validate(
                ctx.model_dump(warnings=False) if isinstance(ctx, BaseModel) else ctx
            )
        except ValidationError as exc:
            raise InvalidInput(
                f"context is not a valid {model.__name__} ({where}): {summary(exc)}"
            ) from exc
        ctx = checked.model_dump(mode="json")
    elif not isinstance(ctx, Mapping):
        raise InvalidInput(f"context must be a JSON object ({where}), got {type(ctx).__name__}")
    return to_json(ctx, what=f"context ({where})", max_bytes=max_bytes)


def parse_payload(
    schema: type[BaseModel] | None,
    payload: Any,
    *,
    event: str,
    where: str,
    ids: dict[str, Any],
    max_bytes: int,
) -> tuple[Any, Any]:
    """The payload hooks see and its JSON form, or :class:`InvalidPayload`."""
    deep = too_deep(payload)  # before validating or copying it: deep data overflows the stack
    if deep is not None:
        raise InvalidPayload(f"event {event!r} rejected: payload {deep} ({where})", **ids)
    if schema is not None:
        try:
            payload_obj: Any = schema.model_validate(
                payload.model_dump() if isinstance(payload, BaseModel) else payload
            )
        except ValidationError as exc:
            raise InvalidPayload(
                f"event {event!r} rejected: payload is not a valid {schema.__name__} "
                f"({where}): {summary(exc)}; nothing changed",
                **ids,
            ) from exc
        try:
            payload_json = to_json(
                payload_obj.model_dump(mode="json"), what="payload", max_bytes=max_bytes
            )
        except InvalidPayload as exc:
            raise InvalidPayload(
                f"event {event!r} rejected ({where}): {exc.message}", **ids
            ) from exc
    else:
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        try:
            payload_json = to_json(payload, what="payload", max_bytes=max_bytes)
        except InvalidPayload as exc:
            raise InvalidPayload(
                f"event {event!r} rejected ({where}): {exc.message}", **ids
            ) from exc
        payload_obj = pydantic_core.from_json(pydantic_core.to_json(payload_json))
    return payload_obj, payload_json
