"""The effect outbox: effects recorded with a transition, dispatched after it commits.

Claiming an effect moves its ``available_at`` forward by a lease, in its own short
transaction, so two dispatchers never run it at once; the effect then runs with no
transaction open, and a second transaction marks it done, or failed with a retry
time (exponential backoff), or dead after ``max_attempts``. A dispatcher that dies
mid-effect leaves it to run again when the lease runs out: at least once.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from statewf.adapter import CompiledMachine
from statewf.aio import wait_for_hook
from statewf.clock import Clock
from statewf.errors import MachineNotRegistered
from statewf.hooks import Hook
from statewf.records import EffectCall, EffectRecord, Instance, TransitionRecord
from statewf.store import SqlStore
from statewf.store.effects import EffectRows

log = logging.getLogger("statewf.outbox")

#: Longest wait between two attempts of a failing effect.
MAX_BACKOFF = timedelta(minutes=5)


def effect_hook(
    compiled: dict[tuple[str, str], CompiledMachine], machine: str, version: str, name: str
) -> Hook:
    """The effect ``name`` of a registered machine version (the engine's resolver)."""
    found = compiled.get((machine, version))
    hook = found.spec.effect_hooks().get(name) if found is not None else None
    if hook is None:
        raise MachineNotRegistered(
            f"no effect {name!r} in registered machine {machine!r} version {version!r}; "
            "register the machine (pass --app on the CLI) before dispatching its effects",
            machine=machine,
        )
    return hook


class Outbox:
    """Dispatches and lists the effects in the outbox table."""

    def __init__(
        self,
        store: SqlStore,
        clock: Clock,
        resolve: Callable[[str, str, str], Hook],
        versions: Callable[[], list[tuple[str, str]]],
        *,
        max_attempts: int = 10,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self.store = store
        self.clock = clock
        self.resolve = resolve
        self.versions = versions
        self.max_attempts = max_attempts
        self.lease = lease

    def rows(
        self, snap: Instance, record: TransitionRecord, names: Sequence[str], claimed: bool
    ) -> EffectRows:
        """The outbox rows of effects ``names`` of ``record`` (which moved to ``snap``);
        leased to this process from the row's time when it runs them itself."""
        args = {
            "machine": snap.machine,
            "machine_version": snap.machine_version,
            "event": record.event,
            "state": snap.state,
            "context": snap.context,
            "payload": record.payload,
        }
        now = record.created_at
        until = now + self.lease if claimed else None
        return EffectRows(snap.id, record.seq, names, args, now, until)

    def dispatch(
        self, *, limit: int = 100, instance_id: str | None = None, seq: int | None = None
    ) -> int:
        """Claim due effects one at a time and run each; the number attempted.

        Each claim takes a fresh lease just before its effect runs, so a long batch
        never runs an effect whose lease has already expired. Only effects of machine
        versions registered here are claimed: a process that does not have a
        version's code leaves its effects to one that does.
        """
        versions = self.versions()
        attempted = 0
        while attempted < limit and versions:
            now = self.clock.now()
            with self.store.transaction() as tx:
                claimed = tx.claim_effects(
                    now,
                    now + self.lease,
                    limit=1,
                    versions=versions,
                    instance_id=instance_id,
                    seq=seq,
                    max_attempts=self.max_attempts,
                )
            if not claimed:
                break
            effect, args = claimed[0]
            self._run(effect, args)
            attempted += 1
        return attempted

    def run_claimed(self, claimed: list[tuple[EffectRecord, dict[str, Any]]]) -> None:
        """Run effects this process recorded already claimed, with their transition."""
        for effect, args in claimed:
            self._run(effect, args)

    def _run(self, effect: EffectRecord, args: dict[str, Any]) -> None:
        error: str | None = None
        try:
            hook = self.resolve(args["machine"], args["machine_version"], effect.name)
            result = hook.fn(
                EffectCall(
                    instance_id=effect.instance_id,
                    machine=args["machine"],
                    seq=effect.seq,
                    name=effect.name,
                    event=args.get("event"),
                    state=args["state"],
                    context=args["context"],
                    payload=args.get("payload"),
                    attempt=effect.attempts,
                    idempotency_key=f"{effect.instance_id}:{effect.seq}:{effect.position}",
                )
            )
            if inspect.isawaitable(result):
                wait_for_hook(result, what=f"effect {effect.name!r}")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "effect %s of instance %s (seq %s) failed on attempt %s: %s",
                effect.name,
                effect.instance_id,
                effect.seq,
                effect.attempts,
                error,
                extra={"instance_id": effect.instance_id, "effect": effect.name},
            )
        now = self.clock.now()
        backoff = min(MAX_BACKOFF, timedelta(seconds=2.0 ** min(effect.attempts, 10)))
        # one autocommitted statement on PostgreSQL: no BEGIN and COMMIT round trips
        with self.store.statement() as tx:
            finished = tx.finish_effect(
                effect.id,
                attempt=effect.attempts,
                now=now,
                error=error,
                retry_at=now + backoff,
                give_up=effect.attempts >= self.max_attempts,
            )
        if not finished:
            log.warning(
                "effect %s of instance %s (seq %s): attempt %s outlived its lease; "
                "a later attempt owns the outcome",
                effect.name,
                effect.instance_id,
                effect.seq,
                effect.attempts,
            )

    def list(
        self, *, status: str | None = None, instance_id: str | None = None, limit: int = 100
    ) -> list[EffectRecord]:
        """Outbox rows, oldest first."""
        with self.store.transaction() as tx:
            return tx.list_effects(status=status, instance_id=instance_id, limit=limit)
