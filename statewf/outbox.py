"""The effect outbox: effects recorded with a transition, dispatched after it commits.

Claiming an effect moves its ``available_at`` forward by a lease, in its own short
transaction, so two dispatchers never run it at once; the effect then runs with no
transaction open, and its outcome marks it done, or failed with a retry time
(exponential backoff), or dead after ``max_attempts``. Outcomes are written in
batches (:mod:`statewf.outcomes`): those of effects run inline after a transition
shortly after, off the caller's path, those of a :meth:`Outbox.dispatch` before it
returns; every read of the outbox writes the queued ones first. A dispatcher that
dies mid-effect, or before its outcome is written, leaves it to run again when the
lease runs out: at least once.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from statewf.adapter import CompiledMachine
from statewf.aio import wait_for_hook
from statewf.clock import Clock
from statewf.errors import InvalidInput, MachineNotRegistered
from statewf.hooks import Hook
from statewf.outcomes import Outcomes
from statewf.records import EffectCall, EffectRecord, Instance, TransitionRecord
from statewf.store import SqlStore
from statewf.store.effects import EffectOutcome, EffectRows

log = logging.getLogger("statewf.outbox")

#: Each compiled machine's effects by name (its spec's ``effect_hooks()``, built once).
_effect_hooks: weakref.WeakKeyDictionary[CompiledMachine, dict[str, Hook]] = (
    weakref.WeakKeyDictionary()
)

#: Longest wait between two attempts of a failing effect.
MAX_BACKOFF = timedelta(minutes=5)

#: How long a claimed effect is leased to the process running it.
LEASE = timedelta(seconds=60)

#: Seconds an inline effect's outcome waits for others to be written with.
OUTCOME_DELAY = 0.05


def effect_hook(
    compiled: dict[tuple[str, str], CompiledMachine], machine: str, version: str, name: str
) -> Hook:
    """The effect ``name`` of a registered machine version (the engine's resolver)."""
    found = compiled.get((machine, version))
    hook = None
    if found is not None:
        hooks = _effect_hooks.get(found)
        if hooks is None:  # a compiled machine's hooks never change
            hooks = _effect_hooks[found] = found.spec.effect_hooks()
        hook = hooks.get(name)
    if hook is None:
        raise MachineNotRegistered(
            f"no effect {name!r} in registered machine {machine!r} version {version!r}; "
            "register the machine (pass --app on the CLI) before dispatching its effects",
            machine=machine,
        )
    return hook


def check_outcome_delay(delay: float, lease: timedelta = LEASE) -> None:
    """:class:`InvalidInput` unless ``delay`` is >= 0 and far shorter than the lease."""
    if not 0 <= delay <= lease.total_seconds() / 4:
        raise InvalidInput(
            f"effect_outcome_delay must be >= 0 and far shorter than the effect lease "
            f"({lease.total_seconds()} s): at most a quarter of it, got {delay} s"
        )


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
        lease: timedelta = LEASE,
        outcome_delay: float = OUTCOME_DELAY,
    ) -> None:
        self.store = store
        self.clock = clock
        self.resolve = resolve
        self.versions = versions
        self.max_attempts = max_attempts
        self.lease = lease
        check_outcome_delay(outcome_delay, lease)
        #: outcomes not written yet (see :mod:`statewf.outcomes`)
        self.outcomes = Outcomes(store, delay=outcome_delay)

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
        version's code leaves its effects to one that does. The outcomes are written
        together before it returns.
        """
        try:
            return self._dispatch(limit, instance_id, seq)
        finally:
            self.outcomes.flush()

    def _dispatch(self, limit: int, instance_id: str | None, seq: int | None) -> int:
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
            if result is not None and inspect.isawaitable(result):
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
        if error is None:
            outcome = EffectOutcome(effect.id, effect.attempts, "done", now)
        elif effect.attempts >= self.max_attempts:
            outcome = EffectOutcome(effect.id, effect.attempts, "dead", now, error)
        else:
            backoff = min(MAX_BACKOFF, timedelta(seconds=2.0 ** min(effect.attempts, 10)))
            outcome = EffectOutcome(effect.id, effect.attempts, "retry", now + backoff, error)
        # no commit of its own: written with the others queued (statewf.outcomes)
        self.outcomes.add(outcome, effect.name)

    def close(self) -> None:
        """Write the queued outcomes and stop their thread."""
        self.outcomes.close()

    def list(
        self, *, status: str | None = None, instance_id: str | None = None, limit: int = 100
    ) -> list[EffectRecord]:
        """Outbox rows, oldest first (the queued outcomes written first)."""
        self.outcomes.flush()
        with self.store.transaction() as tx:
            return tx.list_effects(status=status, instance_id=instance_id, limit=limit)
