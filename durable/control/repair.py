"""Operations on finished runs: dead letters, retry from the failed step, discard, fork.

Each operation appends log rows under the run's row lock, in one transaction, and
never runs workflow code: a run that must go on is made due (``status="waiting"``,
``wake_at=now``) for a scheduler or worker that has the code to claim. So a
:class:`~durable.Client` or the CLI, without the code, repairs runs too.

* ``retry_run`` appends one ``retry_run`` row whose ``meta["voided"]`` lists the
  step positions whose outcome replay forgets (see
  :meth:`durable.log.replay.History.to_void_on_retry`); the steps before them are
  replayed from the log, never executed again.
* ``discard_run`` appends one ``discard`` row: the run is ``cancelled`` for good.
* ``fork_run`` creates a new run whose log copies the original's recorded steps
  before the named one; the original is not changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from durable.control.actions import load_run
from durable.errors import RunFinished
from durable.log.records import (
    CANCELLED,
    COMPLETED,
    DEAD,
    FAILED,
    KIND_DISCARD,
    KIND_EVENT,
    KIND_FORK,
    KIND_PATCH,
    KIND_RETRY,
    KIND_RETRY_RUN,
    KIND_STEP,
    KIND_STEP_FAILED,
    PENDING,
    RUN_KIND,
    WAIT_KINDS,
    WAITING,
)
from durable.log.replay import History
from statewf.appending import Move, append, append_row
from statewf.errors import DuplicateInstance, InvalidInput
from statewf.fold import apply
from statewf.records import KIND_CREATE, Instance, Page, TransitionRecord
from statewf.store import SqlStore
from statewf.store.leases import route_of
from statewf.store.runs import notify_wake, run_log

#: Statuses an operator can retry or discard.
REPAIRABLE: frozenset[str] = frozenset({FAILED, DEAD})
#: Context keys of a finished run that a retry clears.
_FINISHED_KEYS = ("error", "output", "output_model", "waiting")
#: Log-row kinds that record a step position (copied by a fork).
_STEP_KINDS = frozenset({KIND_STEP, KIND_STEP_FAILED, KIND_RETRY, *WAIT_KINDS})


# ------------------------------------------------------------ the transactions


def list_runs(
    store: SqlStore,
    statuses: Sequence[str],
    workflow: str | None,
    resource_id: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Instance]:
    """One page of runs in ``statuses``, oldest first."""
    with store.transaction(readonly=True) as tx:
        items, next_cursor = tx.list_instances(
            machine=workflow,
            status=statuses,
            resource_id=resource_id,
            kind=RUN_KIND,
            limit=limit,
            cursor=cursor,
        )
    return Page[Instance](items=items, next_cursor=next_cursor)


def retry(
    store: SqlStore, run_id: str, resource_id: str | None, reason: str | None, now: datetime
) -> Instance:
    """Append a ``retry_run`` row to a failed or dead run and make it due."""
    with store.transaction() as tx:
        snap = load_run(tx, run_id, resource_id)
        _check_repairable(snap, "retried", "fork it (fork_run) to run its steps again")
        history = History.from_log(run_log(tx, run_id))
        error = snap.context.get("error")
        failed_step = error.get("step") if isinstance(error, dict) else None
        voided = history.to_void_on_retry(failed_step)
        finished = sum(1 for p in voided if p in history.steps)
        meta: dict[str, Any] = {"voided": voided, "from_status": snap.status}
        if reason:
            meta["reason"] = reason
        if isinstance(error, dict):
            meta["error"] = error
        context_set: dict[str, Any] = {
            "completed_steps": max(0, int(snap.context.get("completed_steps", 0)) - finished)
        }
        deadline = _deadline_again(snap, now)
        if deadline is not None:
            context_set["deadline"] = deadline
        kept = [s for s in history.steps.values() if s.position not in voided and s.ok]
        last = max(kept, key=lambda s: s.position).key if kept else "start"
        notify_wake(store, tx, run_id)
        return append_row(
            tx,
            snap,
            now,
            kind=KIND_RETRY_RUN,
            target=(last,),
            status=WAITING,
            wake_at=now,
            meta=meta,
            context_set=context_set,
            context_unset=tuple(k for k in _FINISHED_KEYS if k in snap.context),
        )


def discard(
    store: SqlStore, run_id: str, resource_id: str | None, reason: str, now: datetime
) -> Instance:
    """Append a ``discard`` row to a failed or dead run: it is ``cancelled``."""
    with store.transaction() as tx:
        snap = load_run(tx, run_id, resource_id)
        _check_repairable(snap, "discarded", "there is nothing to discard")
        return append_row(
            tx,
            snap,
            now,
            kind=KIND_DISCARD,
            target=(CANCELLED,),
            status=CANCELLED,
            meta={"reason": reason, "from_status": snap.status},
        )


def fork(
    store: SqlStore,
    run_id: str,
    resource_id: str | None,
    from_step: str,
    new_id: str,
    now: datetime,
) -> Instance:
    """Create run ``new_id`` from run ``run_id``'s steps before ``from_step``, due now."""
    with store.transaction() as tx:
        original = load_run(tx, run_id, resource_id)
        records = run_log(tx, run_id)
        history = History.from_log(records)
        recorded = step_positions(records)
        position = recorded.get(from_step) if isinstance(from_step, str) else None
        if position is None:
            known = sorted(recorded, key=lambda k: recorded[k])
            raise InvalidInput(
                f"run {run_id!r} has no step {from_step!r} to fork from; its steps are "
                f"{', '.join(repr(k) for k in known) or '(none)'}",
                instance_id=run_id,
                step=from_step,
                known_steps=known,
            )
        if tx.get_instance(new_id) is not None:
            raise DuplicateInstance(
                f"a run or instance with id {new_id!r} already exists; choose another id "
                "for the fork, or omit it to get a generated one",
                instance_id=new_id,
            )
        rows = fork_log(original, records, history, from_step, position, new_id, now)
        snap: Instance | None = None
        for record in rows:
            snap = apply(snap, record)
        assert snap is not None
        route = route_of(tx, run_id)  # same queue, priority, labels
        if not append(tx, rows, Move(snap, None, route)):
            raise DuplicateInstance(
                f"a run or instance with id {new_id!r} already exists; choose another id",
                instance_id=new_id,
            )
        notify_wake(store, tx, new_id)
        return snap


# ------------------------------------------------------------ deciding (pure)


def fork_log(
    original: Instance,
    records: Sequence[TransitionRecord],
    history: History,
    from_step: str,
    position: int,
    new_id: str,
    now: datetime,
) -> list[TransitionRecord]:
    """The whole log of a fork of ``original`` at ``from_step`` (at ``position``). Pure.

    A create row; copies of the rows of each step before ``position`` whose outcome
    the log holds (after the last retry that voided it), with the events their waits
    took; and a ``fork`` row that makes the run due. Unfinished steps are not copied.
    """
    ctx = original.context
    context: dict[str, Any] = {"input": ctx.get("input"), "completed_steps": 0}
    if "plan" in ctx:
        context["plan"] = ctx["plan"]
    deadline = _deadline_again(original, now)
    if deadline is not None:
        context["deadline"] = deadline
    origin = {"run": original.id, "step": from_step, "position": position}
    rows = [
        TransitionRecord(
            instance_id=new_id,
            seq=1,
            kind=KIND_CREATE,
            target=("start",),
            context_set=context,
            status=PENDING,
            meta={
                "machine": original.machine,
                "machine_version": original.machine_version,
                "kind": RUN_KIND,
                "resource_id": original.resource_id,
                "idempotency_key": None,
                "forked_from": origin,
            },
            created_at=now,
        )
    ]
    by_position: dict[int, list[TransitionRecord]] = {}
    for record in records:
        if record.kind == KIND_RETRY_RUN:
            for voided in record.meta.get("voided", ()):
                by_position.pop(int(voided), None)
        elif record.kind in _STEP_KINDS and "position" in record.meta:
            by_position.setdefault(int(record.meta["position"]), []).append(record)
    kept = [p for p in by_position if p < position and p in history.steps]
    copied = sorted((r for p in kept for r in by_position[p]), key=lambda r: r.seq)
    taken = {int(r.meta["event_seq"]) for r in copied if "event_seq" in r.meta}
    events = [r for r in records if r.kind == KIND_EVENT and r.seq in taken]
    # the patch answers given before the fork point: the fork replays the same branches
    events += [r for r in records if r.kind == KIND_PATCH and int(r.meta.get("at", 0)) <= position]
    new_seq: dict[int, int] = {}
    done = 0
    config: tuple[str, ...] = ("start",)
    for record in sorted([*copied, *events], key=lambda r: r.seq):
        seq = len(rows) + 1
        new_seq[record.seq] = seq
        meta = {**record.meta, "forked_from": {"run": original.id, "seq": record.seq}}
        if "event_seq" in meta:
            meta["event_seq"] = new_seq[int(meta["event_seq"])]
        context_set: dict[str, Any] = {}
        target: tuple[str, ...] = ()
        if record.kind in (KIND_STEP, KIND_STEP_FAILED):
            done += 1
            context_set["completed_steps"] = done
            target = (record.key or "start",)
        rows.append(
            TransitionRecord(
                instance_id=new_id,
                seq=seq,
                kind=record.kind,
                event=record.event,
                source=config,
                target=target,
                payload=record.payload,
                context_set=context_set,
                status=PENDING,
                key=record.key,
                meta=meta,
                created_at=now,
            )
        )
        config = target or config
    rows.append(
        TransitionRecord(
            instance_id=new_id,
            seq=len(rows) + 1,
            kind=KIND_FORK,
            source=config,
            status=WAITING,
            wake_at=now,
            meta={**origin, "copied": len(rows) - 1},
            created_at=now,
        )
    )
    return rows


def step_positions(records: Sequence[TransitionRecord]) -> dict[str, int]:
    """Each step key the log records (a voided outcome too) -> its latest position. Pure."""
    positions: dict[str, int] = {}
    for record in records:
        if record.kind in _STEP_KINDS and "position" in record.meta and record.key:
            positions[record.key] = int(record.meta["position"])
    return positions


def _deadline_again(snap: Instance, now: datetime) -> str | None:
    """A new deadline, as far from ``now`` as the run's was from its start (None: none)."""
    deadline = snap.context.get("deadline")
    if not deadline:
        return None
    timeout = datetime.fromisoformat(deadline) - snap.created_at
    return (now + max(timeout, timedelta(0))).isoformat()


def _check_repairable(snap: Instance, action: str, otherwise: str) -> None:
    if snap.status in REPAIRABLE:
        return
    if snap.status in (COMPLETED, CANCELLED):
        raise RunFinished(
            f"run {snap.id!r} is {snap.status}; only failed or dead runs can be "
            f"{action} ({otherwise})",
            instance_id=snap.id,
            state=snap.status,
        )
    raise InvalidInput(
        f"run {snap.id!r} is {snap.status}, not failed or dead; only failed or dead runs "
        f"can be {action}: wait for it to finish, or cancel it",
        instance_id=snap.id,
        state=snap.status,
    )
