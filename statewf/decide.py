"""The pure core: deciding what an event does to an instance.

``start`` and ``decide`` are functions of (compiled machine, snapshot, event,
payload, now). They return the log record to append, the snapshot after it and the
effects to put in the outbox, or raise an :class:`~statewf.errors.EventRejected`.
No database, clock or randomness is touched here. A flat machine is driven through
``transitions`` (:mod:`statewf.adapter`); a statechart through the SCXML algorithm
(:mod:`statewf.macrostep`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from statewf import macrostep
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
from statewf.records import (
    ACTIVE,
    FINAL,
    KIND_CREATE,
    KIND_MIGRATE,
    KIND_TIMER,
    Instance,
    TransitionRecord,
    event_record,
)
from statewf.running import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Decision,
    HookRun,
    dump_context,
    load_context,
    parse_payload,
    summary,
    to_json,
)
from statewf.spec import Machine, ResolvedTimer, ResolvedTransition
from statewf.values import too_deep

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Decision",
    "allowed_events",
    "decide",
    "due_timer",
    "fire_timer",
    "first_wake",
    "load_context",
    "start",
    "timer_position",
    "to_json",
]


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
        raise InvalidInput(f"context {deep} ({where})", instance_id=error_id)
    if spec.context is not None:
        try:
            ctx: Any = spec.context.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(
                f"context is not a valid {spec.context.__name__} ({where}): {summary(exc)}",
                instance_id=error_id,
            ) from exc
    else:
        ctx = copy.deepcopy(raw)
    meta = {
        "machine": spec.name,
        "machine_version": spec.version,
        "kind": "machine",
        "resource_id": resource_id,
        "idempotency_key": idempotency_key,
    }
    if spec.chart is not None:
        return macrostep.start_chart(
            compiled, ctx, instance_id=instance_id, now=now, meta=meta, max_bytes=max_bytes
        )
    assert isinstance(spec.initial, str)
    runner = HookRun(where, ctx, None, instance_id=instance_id, event=None, state=spec.initial)
    compiled.enter_initial(runner)
    data = dump_context(compiled, runner.ctx, where, max_bytes)
    initial = spec.states[spec.initial]
    record = TransitionRecord(
        instance_id=instance_id,
        seq=1,
        kind=KIND_CREATE,
        target=(spec.initial,),
        context_set=data,
        status=FINAL if initial.final else ACTIVE,
        wake_at=first_wake(spec, spec.initial, now),
        meta=meta,
        created_at=now,
    )
    return Decision(record, apply(None, record), tuple(runner.effects))


def allowed_events(compiled: CompiledMachine, snapshot: Instance) -> list[str]:
    """Events with a transition from the instance's state (guards not evaluated)."""
    if compiled.spec.chart is not None:
        return macrostep.allowed_chart_events(compiled, snapshot)
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
    if spec.chart is not None:
        return macrostep.decide_chart(compiled, snapshot, event, payload, now, max_bytes=max_bytes)
    state = snapshot.configuration[0]
    if snapshot.status == FINAL:
        raise InstanceFinished(
            f"event {event!r} rejected: {_where(compiled, snapshot)} is final and accepts no "
            "more events; create a new instance to continue",
            **_ids(snapshot, event),
        )
    options = spec.transitions.get(state, {}).get(event)
    if not options:
        allowed = ", ".join(spec.events_from(state)) or "none"
        raise UnknownEvent(
            f"event {event!r} rejected: {_where(compiled, snapshot)} has no transition for it "
            f"(allowed here: {allowed}); nothing changed",
            allowed=spec.events_from(state),
            **_ids(snapshot, event),
        )
    schema = options[0].payload
    if payload is None and schema is None:  # what parse_payload makes of it, without the trip
        payload_obj = payload_json = None
    else:
        payload_obj, payload_json = parse_payload(
            schema,
            payload,
            event=event,
            where=_where(compiled, snapshot),
            ids=_ids(snapshot, event),
            max_bytes=max_bytes,
        )
    direct = compiled.direct.get((state, event))
    if direct is not None:
        # no code to call: no hook sees or changes the context, so it is not copied;
        # with a model it is still loaded as the hooks' path loads it (a private copy
        # validated: an invalid one is rejected, a validator never sees the snapshot's
        # own dict); effects only record their names
        if spec.context is not None:
            load_context(compiled, snapshot.context)
        effects = compiled.direct_effects[(state, event)]
        return _decided(spec, snapshot, event, now, direct, payload_json, {}, (), effects)
    where = _where(compiled, snapshot)
    runner = HookRun(
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
            **_ids(snapshot, event),
        )
    if runner.changed:
        try:
            new_context = dump_context(compiled, runner.ctx, where, max_bytes)
        except (InvalidInput, InvalidPayload) as exc:
            raise ActionFailed(
                f"event {event!r} rejected: the actions left an unstorable context: {exc.message}",
                **_ids(snapshot, event),
            ) from exc
        changed, removed = context_diff(snapshot.context, new_context)
    else:
        changed, removed = {}, ()
    return _decided(
        spec,
        snapshot,
        event,
        now,
        runner.transition,
        payload_json,
        changed,
        removed,
        tuple(runner.effects),
    )


def _where(compiled: CompiledMachine, snapshot: Instance) -> str:
    return f"instance {snapshot.id!r} of {compiled.spec.name!r} in state {snapshot.state!r}"


def _ids(snapshot: Instance, event: str) -> dict[str, Any]:
    return {"instance_id": snapshot.id, "event": event, "state": snapshot.state}


def _decided(
    spec: Machine,
    snapshot: Instance,
    event: str,
    now: datetime,
    taken: ResolvedTransition,
    payload_json: Any,
    changed: dict[str, Any],
    removed: tuple[str, ...],
    effects: tuple[str, ...],
) -> Decision:
    """The event record for ``taken`` (the transition that passed its guards) and after it."""
    destination = taken.destination
    internal = taken.internal
    record = event_record(
        snapshot.id,
        snapshot.version + 1,
        event,
        snapshot.configuration,
        (destination,),
        payload_json,
        changed,
        removed,
        FINAL if spec.states[destination].final else ACTIVE,
        snapshot.wake_at if internal else first_wake(spec, destination, now),
        {"internal": True} if internal else {},
        now,
    )
    return Decision(record, apply(snapshot, record), effects)


def first_wake(spec: Machine, state: str, entered_at: datetime) -> datetime | None:
    """When the first delayed transition of ``state`` comes due, entered at ``entered_at``."""
    timers = spec.timers.get(state, ())
    return entered_at + timers[0].delay if timers else None


def timer_position(history: list[TransitionRecord]) -> tuple[datetime, int]:
    """When the current state was entered, and how many of its timers were skipped since."""
    skipped = 0
    for record in reversed(history):
        if record.kind == KIND_MIGRATE:  # the migration says where the new state's timers are
            entered = datetime.fromisoformat(record.meta["timers_from"])
            return entered, skipped + int(record.meta.get("timers_skipped", 0))
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
    entered_at, skipped = timer_position(history)
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
    if spec.chart is not None:
        return macrostep.fire_chart_timer(compiled, snapshot, now, max_bytes=max_bytes)
    found = due_timer(compiled, snapshot, history)
    if found is None or snapshot.wake_at is None or snapshot.wake_at > now:
        raise InvalidInput(
            f"instance {snapshot.id!r} has no delayed transition due at {now.isoformat()}",
            instance_id=snapshot.id,
            state=snapshot.state,
        )
    timer, entered_at = found
    where = f"instance {snapshot.id!r} of {spec.name!r} in state {snapshot.state!r}"
    runner = HookRun(
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
            dump_context(compiled, runner.ctx, where, max_bytes)
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
