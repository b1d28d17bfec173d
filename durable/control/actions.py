"""Operator actions on runs: cancel, pause, resume, send events, fast-forward, wake.

Each is one log row appended under the run's row lock, in one transaction, with the
snapshot it implies. None of them runs workflow code: a run that must go on is
made due (``status="waiting"``, ``wake_at=now``) for the scheduler to claim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jsonschema
from pydantic import ValidationError

from durable.errors import RunFinished, RunNotFound
from durable.log.codec import encode, import_model
from durable.log.records import (
    CANCELLED,
    KIND_CANCEL,
    KIND_EVENT,
    KIND_FAST_FORWARD,
    KIND_PAUSE,
    KIND_RESUME,
    PAUSED,
    RUN_KIND,
    TERMINAL,
    WAITING,
)
from statewf.appending import append_row
from statewf.errors import InvalidPayload, validation_summary
from statewf.records import Instance
from statewf.store import SqlStore, Tx
from statewf.store.runs import notify_wake


def not_found(run_id: str, resource_id: str | None) -> RunNotFound:
    """The error for a missing run (or one of another resource)."""
    scope = f" for resource {resource_id!r}" if resource_id is not None else ""
    return RunNotFound(
        f"no workflow run {run_id!r}{scope}; check the run id (and resource_id)",
        instance_id=run_id,
    )


def load_run(tx: Tx, run_id: str, resource_id: str | None, *, lock: bool = True) -> Instance:
    """The run ``run_id`` (row-locked with ``lock``); :class:`RunNotFound` if it is unknown,
    not a workflow run, or a run of another resource."""
    snap = tx.get_instance(run_id, lock=lock)
    if snap is None or snap.kind != RUN_KIND:
        raise not_found(run_id, resource_id)
    if resource_id is not None and snap.resource_id != resource_id:
        raise not_found(run_id, resource_id)
    return snap


def _locked(tx: Tx, run_id: str, resource_id: str | None, action: str) -> Instance:
    snap = load_run(tx, run_id, resource_id)
    if snap.status in TERMINAL:
        raise RunFinished(
            f"run {run_id!r} is already {snap.status}; cannot {action} it",
            instance_id=run_id,
            state=snap.status,
        )
    return snap


def cancel(
    store: SqlStore, run_id: str, resource_id: str | None, reason: str | None, now: datetime
) -> Instance:
    """Append a ``cancel`` row: the run is ``cancelled`` for good."""
    with store.transaction() as tx:
        snap = _locked(tx, run_id, resource_id, "cancel")
        return append_row(
            tx,
            snap,
            now,
            kind=KIND_CANCEL,
            target=(CANCELLED,),
            status=CANCELLED,
            meta={"reason": reason} if reason else {},
        )


def pause(
    store: SqlStore, run_id: str, resource_id: str | None, now: datetime, by: str | None = None
) -> Instance:
    """Append a ``pause`` row (a no-op for a paused run); it stops at its next step."""
    with store.transaction() as tx:
        snap = _locked(tx, run_id, resource_id, "pause")
        if snap.status == PAUSED:
            return snap
        deadline = snap.context.get("deadline")
        return append_row(
            tx,
            snap,
            now,
            kind=KIND_PAUSE,
            status=PAUSED,
            wake_at=datetime.fromisoformat(deadline) if deadline else None,
            meta={"by": by or "operator"},
            context_set={"waiting": {"kind": "pause", "external": True}},
        )


def resume(
    store: SqlStore, run_id: str, resource_id: str | None, now: datetime, by: str | None = None
) -> Instance:
    """Append a ``resume`` row to a paused run and make it due; a no-op otherwise."""
    with store.transaction() as tx:
        snap = _locked(tx, run_id, resource_id, "resume")
        if snap.status != PAUSED:
            return snap
        waiting = snap.context.get("waiting") or {}
        meta: dict[str, Any] = {"position": waiting["position"]} if "position" in waiting else {}
        if by:
            meta["by"] = by
        notify_wake(store, tx, run_id)
        return append_row(
            tx,
            snap,
            now,
            kind=KIND_RESUME,
            status=WAITING,
            wake_at=now,
            meta=meta,
            context_unset=("waiting",) if waiting.get("external") else (),
        )


def check_event(run_id: str, event: str, payload: Any, waiting: dict[str, Any]) -> None:
    """Refuse (``InvalidPayload``) event data that does not fit the schema the run waits for.

    With the workflow's code, the pydantic model checks it; without (a client in
    another process, the CLI), the JSON Schema stored with the wait does. A human
    task's answer (``waiting["task"]``) is checked the same way against its own schema.
    """
    _check(run_id, event, payload, waiting["schema"], waiting.get("json_schema"), "data")
    task = waiting.get("task") or {}
    field = task.get("answer_field")
    if task.get("answer_schema") and isinstance(payload, dict) and payload.get(field) is not None:
        root = f"data.{field}"
        _check(
            run_id,
            event,
            payload[field],
            task["answer_schema"],
            task.get("answer_json_schema"),
            root,
        )


def _check(run_id: str, event: str, data: Any, path: str, json_schema: Any, root: str) -> None:
    model = import_model(path)
    name = path.rpartition(":")[2]
    if model is not None:
        try:
            model.model_validate(data)
            return
        except ValidationError as exc:
            problems = validation_summary(exc, root=root)
    elif json_schema:
        validator = jsonschema.Draft202012Validator(json_schema)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if not errors:
            return
        problems = "; ".join(
            f"{'.'.join([root, *(str(p) for p in e.absolute_path)])}: {e.message}"
            for e in errors[:5]
        )
    else:
        return  # a wait recorded before schemas were stored: the wait itself checks
    raise InvalidPayload(
        f"data of event {event!r} does not match {name} that run {run_id!r} waits for: "
        f"{problems}; nothing was recorded",
        instance_id=run_id,
        event=event,
    )


def trigger(
    store: SqlStore,
    run_id: str,
    resource_id: str | None,
    event: str,
    data: Any,
    now: datetime,
    max_bytes: int,
    by: str | None = None,
) -> Instance:
    """Append an ``event`` row; if the run waits for this event, make it due."""
    payload, _ = encode(data, what=f"data of event {event!r}", max_bytes=max_bytes)
    with store.transaction() as tx:
        snap = _locked(tx, run_id, resource_id, f"send event {event!r} to")
        waiting = snap.context.get("waiting") or {}
        awaited = waiting.get("kind") == "wait" and waiting.get("event") == event
        if awaited and waiting.get("schema"):
            check_event(run_id, event, payload, waiting)
        due = awaited and snap.status == WAITING
        if due:
            notify_wake(store, tx, run_id)
        return append_row(
            tx,
            snap,
            now,
            kind=KIND_EVENT,
            event=event,
            payload=payload,
            status=snap.status,
            wake_at=now if due else snap.wake_at,
            meta={"by": by} if by else {},
        )


def fast_forward(
    store: SqlStore,
    run_id: str,
    resource_id: str | None,
    data: Any,
    now: datetime,
    by: str | None = None,
) -> tuple[Instance, str | None]:
    """Release whatever the run waits on; the snapshot and the event to send, if any.

    A sleep or poll is released here (a poll gets ``data`` as its result); for a
    wait for an event the caller sends that event with ``data``; a pause is resumed.
    """
    with store.transaction() as tx:
        snap = _locked(tx, run_id, resource_id, "fast-forward")
        waiting = snap.context.get("waiting") or {}
        kind = waiting.get("kind")
        if snap.status == PAUSED:
            pass  # the caller resumes it
        elif kind == "wait" and snap.status == WAITING:
            return snap, str(waiting["event"])
        elif kind in ("sleep", "poll") and snap.status == WAITING:
            meta: dict[str, Any] = {"position": waiting["position"]}
            if kind == "poll":
                meta["data"], _ = encode(data, what="fast-forward data", max_bytes=1 << 20)
            if by:
                meta["by"] = by
            snap = append_row(
                tx, snap, now, kind=KIND_FAST_FORWARD, status=WAITING, wake_at=now, meta=meta
            )
            notify_wake(store, tx, run_id)
        return snap, None
