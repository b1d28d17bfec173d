"""The pure core: deciding what an event does to an instance.

``start`` and ``decide`` are functions of (compiled machine, snapshot, event,
payload, now). They return the log record to append, the snapshot after it and the
effects to put in the outbox, or raise an :class:`~statewf.errors.EventRejected`.
No database, clock or randomness is touched here.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from statewf.adapter import CompiledMachine
from statewf.errors import (
    ActionFailed,
    GuardRejected,
    InstanceFinished,
    InvalidInput,
    InvalidPayload,
    UnknownEvent,
)
from statewf.fold import apply, context_diff
from statewf.hooks import Hook
from statewf.records import (
    ACTIVE,
    FINAL,
    KIND_CREATE,
    KIND_EVENT,
    KIND_TIMER,
    Instance,
    TransitionRecord,
)
from statewf.spec import Machine, ResolvedTimer, ResolvedTransition
from statewf.values import stored_json, too_deep

#: Default cap on the JSON size of one event payload or context.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Decision:
    """What an accepted event does: the record to append, the new snapshot, the effects."""

    record: TransitionRecord
    snapshot: Instance
    effects: tuple[str, ...]


class _Runner:
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
            _not_awaitable(result, "action", hook)
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
        raise TypeError(
            f"{kind} {hook.name!r} returned an awaitable; guards and actions are plain "
            "functions (do outside work in an @statewf.effect)"
        )


def to_json(value: Any, *, what: str, max_bytes: int) -> Any:
    """``value`` as plain JSON data, or :class:`InvalidPayload` if it cannot be stored."""
    return stored_json(value, what=what, max_bytes=max_bytes, error=InvalidPayload)


def _summary(exc: ValidationError) -> str:
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


def _dump_context(compiled: CompiledMachine, ctx: Any, where: str, max_bytes: int) -> Any:
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
                f"context is not a valid {model.__name__} ({where}): {_summary(exc)}"
            ) from exc
        ctx = checked.model_dump(mode="json")
    elif not isinstance(ctx, Mapping):
        raise InvalidInput(f"context must be a JSON object ({where}), got {type(ctx).__name__}")
    return to_json(ctx, what=f"context ({where})", max_bytes=max_bytes)


def start(
    compiled: CompiledMachine,
    *,
    instance_id: str,
    context: Mapping[str, Any] | BaseModel | None,
    now: datetime,
    resource_id: str | None = None,
    idempotency_key: str | None = None,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    id_chosen: bool = True,
) -> Decision:
    """The create record for a new instance, after entering the initial state.

    ``id_chosen=False`` says the id was generated: errors then speak of "a new
    instance", since no instance of that id will ever exist to look up.
    """
    spec = compiled.spec
    where = (
        f"creating instance {instance_id!r} of {spec.name!r}"
        if id_chosen
        else f"creating a new instance of {spec.name!r}"
    )
    error_id = instance_id if id_chosen else None
    if context is not None and not isinstance(context, BaseModel | Mapping):
        raise InvalidInput(
            f"context must be a JSON object (a dict or a model) ({where}), "
            f"got {type(context).__name__}",
            instance_id=error_id,
        )
    raw = context.model_dump() if isinstance(context, BaseModel) else dict(context or {})
    deep = too_deep(raw)  # before copying or validating it: deep data overflows the stack
    if deep is not None:
        raise InvalidInput(f"context {deep} ({where})", instance_id=instance_id)
    if spec.context is not None:
        try:
            ctx: Any = spec.context.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(
                f"context is not a valid {spec.context.__name__} ({where}): {_summary(exc)}",
                instance_id=error_id,
            ) from exc
    else:
        ctx = copy.deepcopy(raw)
    runner = _Runner(where, ctx, None, instance_id=instance_id, event=None, state=spec.initial)
    compiled.enter_initial(runner)
    data = _dump_context(compiled, runner.ctx, where, max_bytes)
    initial = spec.states[spec.initial]
    record = TransitionRecord(
        instance_id=instance_id,
        seq=1,
        kind=KIND_CREATE,
        target=(spec.initial,),
        context_set=data,
        status=FINAL if initial.final else ACTIVE,
        wake_at=first_wake(spec, spec.initial, now),
        meta={
            "machine": spec.name,
            "machine_version": spec.version,
            "kind": "machine",
            "resource_id": resource_id,
            "idempotency_key": idempotency_key,
        },
        created_at=now,
    )
    return Decision(record, apply(None, record), tuple(runner.effects))


def allowed_events(compiled: CompiledMachine, snapshot: Instance) -> list[str]:
    """Events with a transition from the instance's state (guards not evaluated)."""
    if snapshot.status == FINAL:
        return []
    return compiled.spec.events_from(snapshot.configuration[0])


def decide(
    compiled: CompiledMachine,
    snapshot: Instance,
    event: str,
    payload: Any,
    now: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Decision:
    """Apply ``event`` to ``snapshot``: the record and new snapshot, or a rejection."""
    spec = compiled.spec
    state = snapshot.configuration[0]
    ids = {"instance_id": snapshot.id, "event": event, "state": snapshot.state}
    where = f"instance {snapshot.id!r} of {spec.name!r} in state {snapshot.state!r}"
    if snapshot.status == FINAL:
        raise InstanceFinished(
            f"event {event!r} rejected: {where} is final and accepts no more events; "
            "create a new instance to continue",
            **ids,
        )
    options = spec.transitions.get(state, {}).get(event)
    if not options:
        allowed = ", ".join(spec.events_from(state)) or "none"
        raise UnknownEvent(
            f"event {event!r} rejected: {where} has no transition for it "
            f"(allowed here: {allowed}); nothing changed",
            allowed=spec.events_from(state),
            **ids,
        )
    deep = too_deep(payload)
    if deep is not None:
        raise InvalidPayload(f"event {event!r} rejected: payload {deep} ({where})", **ids)
    schema = options[0].payload
    if schema is not None:
        try:
            payload_obj: Any = schema.model_validate(
                payload.model_dump() if isinstance(payload, BaseModel) else payload
            )
        except ValidationError as exc:
            raise InvalidPayload(
                f"event {event!r} rejected: payload is not a valid {schema.__name__} "
                f"({where}): {_summary(exc)}; nothing changed",
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
    runner = _Runner(
        where + f" handling {event!r}",
        load_context(compiled, snapshot.context),
        payload_obj,
        instance_id=snapshot.id,
        event=event,
        state=snapshot.state,
    )
    destination = compiled.fire(state, event, runner)
    if destination is None or runner.transition is None:
        names = sorted({h.name for t in options for h in (*t.guards, *t.unless)})
        raise GuardRejected(
            f"event {event!r} rejected: the guards of every transition said no "
            f"({where}; guards: {', '.join(names)}); nothing changed",
            guards=names,
            **ids,
        )
    if runner.changed:
        try:
            new_context = _dump_context(compiled, runner.ctx, where, max_bytes)
        except (InvalidInput, InvalidPayload) as exc:
            raise ActionFailed(
                f"event {event!r} rejected: the actions left an unstorable context: {exc.message}",
                **ids,
            ) from exc
        changed, removed = context_diff(snapshot.context, new_context)
    else:
        changed, removed = {}, ()
    record = TransitionRecord(
        instance_id=snapshot.id,
        seq=snapshot.version + 1,
        kind=KIND_EVENT,
        event=event,
        source=snapshot.configuration,
        target=(destination,),
        payload=payload_json,
        context_set=changed,
        context_unset=removed,
        status=FINAL if spec.states[destination].final else ACTIVE,
        wake_at=(
            snapshot.wake_at if runner.transition.internal else first_wake(spec, destination, now)
        ),
        meta={"internal": True} if runner.transition.internal else {},
        created_at=now,
    )
    return Decision(record, apply(snapshot, record), tuple(runner.effects))


def first_wake(spec: Machine, state: str, entered_at: datetime) -> datetime | None:
    """When the first delayed transition of ``state`` comes due, entered at ``entered_at``."""
    timers = spec.timers.get(state, ())
    return entered_at + timers[0].delay if timers else None


def _timer_position(history: list[TransitionRecord]) -> tuple[datetime, int]:
    """When the current state was entered, and how many of its timers were skipped since."""
    skipped = 0
    for record in reversed(history):
        if record.kind == KIND_TIMER and (
            record.meta.get("skipped") or record.meta.get("internal")
        ):
            skipped += 1  # a timer that fired without leaving the state
        elif not record.meta.get("internal"):
            return record.created_at, skipped
    raise ValueError("a log always starts with its create record")


def due_timer(
    compiled: CompiledMachine, snapshot: Instance, history: list[TransitionRecord]
) -> tuple[ResolvedTimer, datetime] | None:
    """The delayed transition the instance waits on and when the state was entered."""
    timers = compiled.spec.timers.get(snapshot.configuration[0], ())
    entered_at, skipped = _timer_position(history)
    if snapshot.status == FINAL or skipped >= len(timers):
        return None
    return timers[skipped], entered_at


def fire_timer(
    compiled: CompiledMachine,
    snapshot: Instance,
    history: list[TransitionRecord],
    now: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Decision:
    """Fire the instance's due delayed transition.

    If its guards say no, or a guard or action raises, the timer is *skipped*: a
    ``timer`` row with ``meta.skipped`` (and the error) is written, nothing else
    changes, and the state's next delayed transition becomes due.
    """
    spec = compiled.spec
    found = due_timer(compiled, snapshot, history)
    if found is None or snapshot.wake_at is None or snapshot.wake_at > now:
        raise InvalidInput(
            f"instance {snapshot.id!r} has no delayed transition due at {now.isoformat()}",
            instance_id=snapshot.id,
            state=snapshot.state,
        )
    timer, entered_at = found
    where = f"instance {snapshot.id!r} of {spec.name!r} in state {snapshot.state!r}"
    runner = _Runner(
        f"{where} firing {timer.label!r}",
        load_context(compiled, snapshot.context),
        None,
        instance_id=snapshot.id,
        event=timer.label,
        state=snapshot.state,
    )
    error: str | None = None
    try:
        destination = compiled.fire(snapshot.configuration[0], timer.trigger, runner)
        new_context = (
            _dump_context(compiled, runner.ctx, where, max_bytes)
            if destination is not None and runner.changed
            else snapshot.context
        )
    except (ActionFailed, InvalidInput, InvalidPayload) as exc:
        destination, error = None, exc.message
    timers = spec.timers[snapshot.configuration[0]]
    position = timers.index(timer) + 1
    next_wake = entered_at + timers[position].delay if position < len(timers) else None
    common = {
        "instance_id": snapshot.id,
        "seq": snapshot.version + 1,
        "kind": KIND_TIMER,
        "event": timer.label,
        "source": snapshot.configuration,
        "created_at": now,
    }
    if destination is None:
        meta: dict[str, Any] = {"timer": timer.label, "skipped": True}
        if error is not None:
            meta["error"] = error
        record = TransitionRecord(
            **common,
            target=snapshot.configuration,
            status=snapshot.status,
            wake_at=next_wake,
            meta=meta,
        )
        return Decision(record, apply(snapshot, record), ())
    changed, removed = context_diff(snapshot.context, new_context)
    internal = timer.transition.internal
    record = TransitionRecord(
        **common,
        target=(destination,),
        context_set=changed,
        context_unset=removed,
        status=FINAL if spec.states[destination].final else ACTIVE,
        wake_at=next_wake if internal else first_wake(spec, destination, now),
        meta={
            "timer": timer.label,
            "due_at": snapshot.wake_at.isoformat(),
            **({"internal": True} if internal else {}),
        },
    )
    return Decision(record, apply(snapshot, record), tuple(runner.effects))
