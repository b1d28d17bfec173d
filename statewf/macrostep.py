"""The pure core for statecharts: one outside event (or timer) is one macrostep, one record.

Like :mod:`statewf.decide`, every function here takes (compiled machine, snapshot,
event, payload, now) and returns a :class:`~statewf.running.Decision` or raises an
:class:`~statewf.errors.EventRejected`. The record's ``target`` is the new
configuration (active leaf paths), its ``meta`` holds the microsteps the macrostep
took and the chart state (history values, pending timers) the fold needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from statewf.adapter import CompiledMachine
from statewf.chart.algorithm import Event, Interpreter, Outcome
from statewf.chart.model import Chart, name_match
from statewf.errors import (
    ActionFailed,
    EventDiscarded,
    GuardRejected,
    InstanceFinished,
    InvalidInput,
    InvalidPayload,
    MacrostepLimit,
    UnknownEvent,
)
from statewf.fold import apply, context_diff
from statewf.records import (
    ACTIVE,
    FINAL,
    KIND_CREATE,
    KIND_EVENT,
    KIND_TIMER,
    Instance,
    PendingTimer,
    TransitionRecord,
)
from statewf.running import Decision, HookRun, dump_context, load_context, parse_payload


def _chart(compiled: CompiledMachine) -> Chart:
    chart = compiled.spec.chart
    assert chart is not None
    return chart


def chart_meta(outcome: Outcome) -> dict[str, Any]:
    """What a record keeps of the chart state besides its configuration (see the fold)."""
    meta: dict[str, Any] = {}
    if outcome.state_ids != outcome.configuration:
        meta["ids"] = list(outcome.state_ids)
    if outcome.history:
        meta["history"] = {k: list(v) for k, v in outcome.history.items()}
    if outcome.timers:
        meta["timers"] = [t.model_dump(mode="json") for t in outcome.timers]
    return meta


def _wake(timers: tuple[PendingTimer, ...]) -> datetime | None:
    return min((t.due_at for t in timers), default=None)


def _limit(exc: MacrostepLimit, instance_id: str, event: str | None) -> MacrostepLimit:
    return MacrostepLimit(
        f"instance {instance_id!r}, event {event!r}: {exc.message}",
        instance_id=instance_id,
        event=event,
    )


def start_chart(
    compiled: CompiledMachine,
    ctx: Any,
    *,
    instance_id: str,
    now: datetime,
    meta: Mapping[str, Any],
    max_bytes: int,
) -> Decision:
    """The create record of a chart instance: the initial configuration, settled."""
    spec = compiled.spec
    where = f"creating instance {instance_id!r} of {spec.name!r}"
    runner = HookRun(where, ctx, None, instance_id=instance_id, event=None, state="")
    try:
        outcome = Interpreter(_chart(compiled), runner, now=now, seq=1).start()
    except MacrostepLimit as exc:
        raise _limit(exc, instance_id, None) from None
    data = dump_context(compiled, runner.ctx, where, max_bytes)
    record = TransitionRecord(
        instance_id=instance_id,
        seq=1,
        kind=KIND_CREATE,
        target=outcome.configuration,
        context_set=data,
        status=FINAL if outcome.finished else ACTIVE,
        wake_at=_wake(outcome.timers),
        meta={**meta, "chart": chart_meta(outcome), "microsteps": outcome.microsteps},
        created_at=now,
    )
    return Decision(record, apply(None, record), tuple(runner.effects))


def allowed_chart_events(compiled: CompiledMachine, snapshot: Instance) -> list[str]:
    """Events some transition of the active configuration names (guards not evaluated)."""
    if snapshot.status == FINAL:
        return []
    found: dict[str, None] = {}
    for path in snapshot.configuration:
        found.update(dict.fromkeys(compiled.spec.events_from(path)))
    return list(found)


def _schema(chart: Chart, event: str) -> Any:
    if event in chart.payloads:
        return chart.payloads[event]
    for descriptor, schema in chart.payloads.items():
        if schema is not None and name_match((descriptor,), event):
            return schema
    return None


def _interpreter(
    compiled: CompiledMachine, snapshot: Instance, runner: HookRun, now: datetime
) -> Interpreter:
    return Interpreter(
        _chart(compiled),
        runner,
        now=now,
        seq=snapshot.version + 1,
        active=snapshot.configuration,
        history=snapshot.history,
        timers=snapshot.timers,
    )


def _context_change(
    compiled: CompiledMachine, snapshot: Instance, runner: HookRun, where: str, max_bytes: int
) -> tuple[dict[str, Any], tuple[str, ...]]:
    if not runner.changed:
        return {}, ()
    new_context = dump_context(compiled, runner.ctx, where, max_bytes)
    return context_diff(snapshot.context, new_context)


def decide_chart(
    compiled: CompiledMachine,
    snapshot: Instance,
    event: str,
    payload: Any,
    now: datetime,
    *,
    max_bytes: int,
) -> Decision:
    """Apply an outside ``event`` to a chart instance: one macrostep, one record."""
    chart = _chart(compiled)
    ids = {"instance_id": snapshot.id, "event": event, "state": snapshot.state}
    where = f"instance {snapshot.id!r} of {compiled.spec.name!r} in {snapshot.state!r}"
    if snapshot.status == FINAL:
        if chart.ignore_unmatched:  # a stopped SCXML session ignores what it is sent
            raise EventDiscarded(f"event {event!r} was discarded: {where} is final", **ids)
        raise InstanceFinished(
            f"event {event!r} rejected: {where} is final and accepts no more events; "
            "create a new instance to continue",
            **ids,
        )
    payload_obj, payload_json = parse_payload(
        _schema(chart, event), payload, event=event, where=where, ids=ids, max_bytes=max_bytes
    )
    runner = HookRun(
        f"{where} handling {event!r}",
        load_context(compiled, snapshot.context),
        payload_obj,
        instance_id=snapshot.id,
        event=event,
        state=snapshot.state,
    )
    try:
        outcome = _interpreter(compiled, snapshot, runner, now).handle(Event(event, payload_obj))
    except MacrostepLimit as exc:
        raise _limit(exc, snapshot.id, event) from None
    if not outcome.taken:
        allowed = allowed_chart_events(compiled, snapshot)
        if chart.ignore_unmatched:
            raise EventDiscarded(
                f"event {event!r} was discarded: no transition of {where} takes it "
                "(SCXML semantics); nothing changed",
                **ids,
            )
        if not outcome.matched:
            raise UnknownEvent(
                f"event {event!r} rejected: {where} has no transition for it "
                f"(allowed here: {', '.join(allowed) or 'none'}); nothing changed",
                allowed=allowed,
                **ids,
            )
        raise GuardRejected(
            f"event {event!r} rejected: the guards of every transition for it said no "
            f"({where}); nothing changed",
            guards=[],
            **ids,
        )
    try:
        changed, removed = _context_change(compiled, snapshot, runner, where, max_bytes)
    except (InvalidInput, InvalidPayload) as exc:
        raise ActionFailed(
            f"event {event!r} rejected: the actions left an unstorable context: {exc.message}",
            **ids,
        ) from exc
    record = TransitionRecord(
        instance_id=snapshot.id,
        seq=snapshot.version + 1,
        kind=KIND_EVENT,
        event=event,
        source=snapshot.configuration,
        target=outcome.configuration,
        payload=payload_json,
        context_set=changed,
        context_unset=removed,
        status=FINAL if outcome.finished else ACTIVE,
        wake_at=_wake(outcome.timers),
        meta={"chart": chart_meta(outcome), "microsteps": outcome.microsteps},
        created_at=now,
    )
    return Decision(record, apply(snapshot, record), tuple(runner.effects))


def fire_chart_timer(
    compiled: CompiledMachine, snapshot: Instance, now: datetime, *, max_bytes: int
) -> Decision:
    """Fire the chart instance's earliest due timer (an ``after`` or a delayed send).

    The timer is removed either way. If nothing takes its event (guards said no), or
    a hook raises, the row is written with ``meta.skipped`` and nothing else changes.
    """
    due = [t for t in snapshot.timers if t.due_at <= now]
    if snapshot.status == FINAL or not due:
        raise InvalidInput(
            f"instance {snapshot.id!r} has no delayed transition due at {now.isoformat()}",
            instance_id=snapshot.id,
            state=snapshot.state,
        )
    timer = min(due, key=lambda t: t.due_at)
    position = snapshot.timers.index(timer)
    remaining = (*snapshot.timers[:position], *snapshot.timers[position + 1 :])
    label = timer.label or timer.event
    where = f"instance {snapshot.id!r} of {compiled.spec.name!r} in {snapshot.state!r}"
    runner = HookRun(
        f"{where} firing {label!r}",
        load_context(compiled, snapshot.context),
        None,
        instance_id=snapshot.id,
        event=label,
        state=snapshot.state,
    )
    base = snapshot.model_copy(update={"timers": remaining})
    error: str | None = None
    outcome: Outcome | None = None
    changed: dict[str, Any] = {}
    removed: tuple[str, ...] = ()
    try:
        outcome = _interpreter(compiled, base, runner, now).handle(Event(timer.event))
        if outcome.taken:
            changed, removed = _context_change(compiled, snapshot, runner, where, max_bytes)
        else:
            outcome = None
    except (ActionFailed, InvalidInput, InvalidPayload, MacrostepLimit) as exc:
        outcome, error = None, exc.message
    meta: dict[str, Any] = {
        "timer": label,
        "timer_id": timer.id,
        "due_at": timer.due_at.isoformat(),
    }
    if outcome is None:
        skipped = Outcome(
            configuration=snapshot.configuration,
            state_ids=snapshot.state_ids,
            history=dict(snapshot.history),
            timers=remaining,
            microsteps=[],
            finished=False,
        )
        meta.update(skipped=True, chart=chart_meta(skipped), microsteps=[])
        if error is not None:
            meta["error"] = error
        record = TransitionRecord(
            instance_id=snapshot.id,
            seq=snapshot.version + 1,
            kind=KIND_TIMER,
            event=label,
            source=snapshot.configuration,
            target=snapshot.configuration,
            status=snapshot.status,
            wake_at=_wake(remaining),
            meta=meta,
            created_at=now,
        )
        return Decision(record, apply(snapshot, record), ())
    meta.update(chart=chart_meta(outcome), microsteps=outcome.microsteps)
    record = TransitionRecord(
        instance_id=snapshot.id,
        seq=snapshot.version + 1,
        kind=KIND_TIMER,
        event=label,
        source=snapshot.configuration,
        target=outcome.configuration,
        context_set=changed,
        context_unset=removed,
        status=FINAL if outcome.finished else ACTIVE,
        wake_at=_wake(outcome.timers),
        meta=meta,
        created_at=now,
    )
    return Decision(record, apply(snapshot, record), tuple(runner.effects))
