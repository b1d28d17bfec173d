"""Running a wait: finish it now from the log, or suspend the run until it is due.

A wait is a positional step like any other. When it cannot finish yet, the
executor writes a suspension row (``sleep``, ``wait``, ``pause`` or ``poll``) that
sets the run's status to ``waiting`` (or ``paused``) and its ``wake_at``, and the
execution ends: a waiting run holds a row, not a coroutine. The engine's scheduler
claims the run when ``wake_at`` comes (an event sets it to "now"), appends a
``wake`` row and replays it; the wait then finishes with an ordinary ``step`` row
holding its outcome, which later replays return from memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from durable.authoring.signals import Suspend
from durable.authoring.waits import MIN_POLL_INTERVAL, WaitSpec
from durable.errors import StepFailed
from durable.execution.outcomes import error_of, invoke
from durable.execution.writer import RunHost
from durable.log.codec import encode, model_path
from durable.log.records import (
    KIND_PAUSE,
    KIND_SLEEP,
    KIND_STEP,
    KIND_STEP_FAILED,
    KIND_WAIT,
    PAUSED,
    WAITING,
    RunError,
)
from durable.log.replay import History
from durable.log.rows import step_row
from statewf.errors import ConcurrencyConflict, InvalidPayload
from statewf.records import Instance
from statewf.store import Tx

log = logging.getLogger("durable")


class WaitingRun(Protocol):
    """What a wait needs of the run's executor (:class:`~durable.execution.runner.RunExecutor`)."""

    history: History
    host: RunHost
    deadline: datetime | None

    @property
    def suspending(self) -> bool:
        """Whether a suspension row was written."""

    def suspend(self) -> None:
        """Record that a suspension row was written."""

    @property
    def run_id(self) -> str:
        """The run's id."""

    async def write(
        self,
        make: Callable[[Tx | None, Instance], dict[str, Any]],
        *,
        final: bool = False,
        needs_tx: bool = False,
        retry: bool = True,
        position: int | None = None,
    ) -> None:
        """Append one row built by ``make``."""


async def run_wait(ex: WaitingRun, position: int, key: str, spec: WaitSpec) -> Any:
    """Finish the wait at ``position`` now if it can, else suspend the run."""
    recorded = ex.history.steps.get(position)
    if recorded is not None:
        if not recorded.ok:
            assert recorded.error is not None
            raise StepFailed(
                key, recorded.error.type, recorded.error.message, attempts=1, instance_id=ex.run_id
            )
        return spec.result(recorded.result, timed_out=recorded.timed_out)
    while True:
        now = ex.host.clock.now()
        row = ex.history.waits.get(position)
        released = ex.history.released.get(position)
        meta: dict[str, Any] = {}
        info: dict[str, Any] = {"kind": spec.kind, "key": key, "position": position}
        wake: datetime | None = None
        if spec.kind == KIND_SLEEP:
            until = _until(row, "until") or spec.until
            if until is None:
                until = now + timedelta(seconds=spec.seconds or 0.0)
            if released is not None or now >= until:
                return await _finish(ex, position, key, spec, None, {})
            wake = until
            meta["until"] = info["until"] = until.isoformat()
        elif spec.kind == KIND_WAIT:
            assert spec.event is not None
            event = ex.history.next_event(spec.event)
            while event is not None and not _matches(ex, spec, event.seq, event.payload):
                # recorded before this wait existed, unchecked: skipped, never the
                # run's failure (deterministic: every replay skips it again)
                ex.history.consumed.add(event.seq)
                event = ex.history.next_event(spec.event)
            if event is not None:
                ex.history.consumed.add(event.seq)
                return await _deliver(ex, position, key, spec, event.payload, event.seq)
            timeout_at = _until(row, "timeout_at")
            if timeout_at is None and spec.seconds is not None:
                timeout_at = now + timedelta(seconds=spec.seconds)
            if released is not None or (timeout_at is not None and now >= timeout_at):
                return await _finish(ex, position, key, spec, None, {"timed_out": True})
            wake = timeout_at
            meta["event"] = info["event"] = spec.event
            if timeout_at is not None:
                meta["timeout_at"] = info["timeout_at"] = timeout_at.isoformat()
            if spec.schema is not None:
                # the import path for clients with the code; the JSON Schema for any
                # other process, so every client checks an event before recording it
                info["schema"] = model_path(spec.schema)
                info["json_schema"] = spec.schema.model_json_schema()
            if spec.task is not None:
                info["task"] = dict(spec.task)
                if spec.answer is not None:
                    info["task"]["answer_field"] = spec.answer_field
                    info["task"]["answer_schema"] = model_path(spec.answer)
                    info["task"]["answer_json_schema"] = spec.answer.model_json_schema()
        elif spec.kind == KIND_PAUSE:
            if released is not None:
                return await _finish(ex, position, key, spec, None, {})
        else:
            checks = int(row.meta.get("attempt", 0)) if row is not None else 0
            timeout_at = _until(row, "timeout_at")
            if timeout_at is None and spec.seconds is not None:
                timeout_at = now + timedelta(seconds=spec.seconds)
            if released is not None:
                found = {"timed_out": False, "data": released.meta.get("data")}
                return await _finish(ex, position, key, spec, found, {"checks": checks})
            assert spec.fn is not None
            checks += 1
            value, error = await _check(ex, spec.fn)
            if value:
                stored, _ = encode(
                    value, what=f"result of poll {key!r}", max_bytes=ex.host.max_bytes
                )
                found = {"timed_out": False, "data": stored}
                return await _finish(ex, position, key, spec, found, {"checks": checks})
            now = ex.host.clock.now()
            if timeout_at is not None and now >= timeout_at:
                lost = {"timed_out": True, "data": None}
                return await _finish(ex, position, key, spec, lost, {"checks": checks})
            wake = now + timedelta(seconds=spec.interval or MIN_POLL_INTERVAL)
            if timeout_at is not None:
                wake = min(wake, timeout_at)
                meta["timeout_at"] = timeout_at.isoformat()
            meta["attempt"] = checks
            if error is not None:
                meta["error"] = error.model_dump(mode="json")
        if ex.deadline is not None:
            wake = ex.deadline if wake is None else min(wake, ex.deadline)
        try:
            await ex.write(_suspension(ex, position, key, spec, wake, meta, info), retry=False)
        except ConcurrencyConflict:
            continue  # something arrived (an event?) while we decided: look again
        ex.suspend()
        raise Suspend(f"{spec.kind} {key!r}")


def _until(row: Any, name: str) -> datetime | None:
    if row is None or not row.meta.get(name):
        return None
    return datetime.fromisoformat(row.meta[name])


async def _check(ex: WaitingRun, fn: Callable[..., Any]) -> tuple[Any, RunError | None]:
    try:
        return await invoke(fn, ()), None
    except Exception as exc:  # a failing check counts as "not yet"; its error is recorded
        return None, error_of(exc)


def _matches(ex: WaitingRun, spec: WaitSpec, seq: int, data: Any) -> bool:
    """Whether an event's data fits the wait's schema (any data fits no schema)."""
    if spec.schema is None:
        return True
    try:
        spec.validate(data)
    except ValidationError as exc:
        log.warning(
            "run %s: event %r (row %s) does not match %s (%s); the wait skips it",
            ex.run_id,
            spec.event,
            seq,
            spec.schema.__name__,
            exc.errors()[0]["msg"],
        )
        return False
    return True


async def _deliver(
    ex: WaitingRun, position: int, key: str, spec: WaitSpec, data: Any, seq: int
) -> Any:
    if spec.schema is not None:
        try:
            spec.validate(data)
        except ValidationError as exc:
            error = RunError(
                type=InvalidPayload.__name__,
                message=f"event {spec.event!r} (row {seq}) does not match "
                f"{spec.schema.__name__}: {exc.errors()[0]['msg']}",
                step=key,
            )
            await ex.write(
                lambda _tx, snap: _row(
                    ex,
                    snap,
                    KIND_STEP_FAILED,
                    key,
                    {"error": error.model_dump(mode="json")},
                    {"position": position, "wait": spec.kind, "event_seq": seq},
                )
            )
            raise StepFailed(
                key, error.type, error.message, attempts=1, instance_id=ex.run_id
            ) from None
    return await _finish(ex, position, key, spec, data, {"event_seq": seq})


async def _finish(
    ex: WaitingRun, position: int, key: str, spec: WaitSpec, result: Any, extra: dict[str, Any]
) -> Any:
    meta = {"position": position, "wait": spec.kind, **extra}
    await ex.write(lambda _tx, snap: _row(ex, snap, KIND_STEP, key, {"result": result}, meta))
    return spec.result(result, timed_out=bool(extra.get("timed_out")))


def _row(
    ex: WaitingRun,
    snap: Instance,
    kind: str,
    key: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    fields = step_row(kind, key, payload, meta, snap, True, ex.suspending)
    if "waiting" in snap.context and not ex.suspending:
        fields["context_unset"] = ("waiting",)
    return fields


def _suspension(
    ex: WaitingRun,
    position: int,
    key: str,
    spec: WaitSpec,
    wake: datetime | None,
    meta: dict[str, Any],
    info: dict[str, Any],
) -> Callable[[Tx | None, Instance], dict[str, Any]]:
    def make(_tx: Tx | None, _snap: Instance) -> dict[str, Any]:
        return {
            "kind": spec.kind,
            "key": key,
            "status": PAUSED if spec.kind == KIND_PAUSE else WAITING,
            "wake_at": wake,
            "target": (key,),
            "meta": {"position": position, **meta},
            "context_set": {"waiting": info},
        }

    return make
