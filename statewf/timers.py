"""Delayed transitions, engine side: firing due timers once, and the scheduler loop.

Mixed into :class:`~statewf.engine.Engine`. The decisions themselves are pure
(:func:`statewf.decide.fire_timer`); this module claims due instances and writes
the decisions, as the engine does for events.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from statewf.adapter import CompiledMachine
from statewf.appending import Move, append
from statewf.clock import Clock
from statewf.decide import Decision, fire_timer
from statewf.records import EffectRecord, Instance
from statewf.snapshots import SnapshotCache
from statewf.store import SqlStore, Tx

log = logging.getLogger("statewf")

#: The shortest sleep of :meth:`TimerOperations.run_timers` after a batch that fired nothing.
MIN_TIMER_SLEEP = 0.05

#: Effects written already claimed by this process, with what they receive.
Claimed = list[tuple[EffectRecord, dict[str, Any]]]


class TimerOperations:
    """Firing due delayed transitions; a mixin of the engine."""

    store: SqlStore
    clock: Clock
    max_payload_bytes: int
    _compiled: dict[tuple[str, str], CompiledMachine]
    _lock: threading.Lock
    _snapshots: SnapshotCache

    # provided by the engine
    def _compiled_for(self, snapshot: Instance) -> CompiledMachine:
        raise NotImplementedError

    def _write(self, tx: Tx, decision: Decision) -> Claimed:
        raise NotImplementedError

    def _after_commit(self, claimed: Claimed) -> None:
        raise NotImplementedError

    def _registered(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._compiled)

    def fire_due_timers(self, *, limit: int = 100) -> int:
        """Fire every delayed transition that has come due; the number of log rows written.

        Each due instance is locked (``SKIP LOCKED`` on PostgreSQL), its timer decided
        and written under a savepoint, so a timer fires exactly once even with many
        schedulers, and one instance that cannot fire never holds up the others.
        Only instances of machine versions registered with this engine are touched.
        """
        versions = self._registered()
        if not versions:
            return 0
        now = self.clock.now()
        fired: list[Decision] = []
        claimed: Claimed = []
        with self.store.transaction() as tx:
            for snapshot in tx.claim_due(now, kind="machine", versions=versions, limit=limit):
                try:
                    with tx.savepoint():
                        compiled = self._compiled_for(snapshot)
                        decision = fire_timer(
                            compiled,
                            snapshot,
                            tx.log(snapshot.id),
                            now,
                            max_bytes=self.max_payload_bytes,
                        )
                        append(tx, [decision.record], Move(decision.snapshot, snapshot.version))
                        mine = self._write(tx, decision)
                except Exception:
                    log.exception("cannot fire the due timer of instance %s", snapshot.id)
                    continue
                fired.append(decision)
                claimed += mine
        for decision in fired:
            self._snapshots.put(decision.snapshot)
        self._after_commit(claimed)
        return len(fired)

    def next_wake_at(self) -> datetime | None:
        """The earliest wake-up time among instances of the registered machine versions."""
        versions = self._registered()
        if not versions:
            return None
        with self.store.transaction(readonly=True) as tx:
            return tx.next_wake_at(kind="machine", versions=versions)

    def run_timers(
        self,
        *,
        poll_interval: float = 1.0,
        stop: threading.Event | None = None,
        max_batches: int | None = None,
    ) -> None:
        """Fire due timers until ``stop`` is set (or ``max_batches`` batches have run).

        Sleeps until the next wake-up, at most ``poll_interval`` seconds (so timers
        created by other processes are seen) and at least 50 ms when nothing fired
        (so an instance that cannot fire does not turn the loop into a busy spin).
        """
        stop = stop or threading.Event()
        batches = 0
        while not stop.is_set():
            fired = self.fire_due_timers()
            batches += 1
            if max_batches is not None and batches >= max_batches:
                return
            if fired:
                continue
            wake = self.next_wake_at()
            delay = poll_interval
            if wake is not None:
                delay = min(poll_interval, (wake - self.clock.now()).total_seconds())
            stop.wait(max(MIN_TIMER_SLEEP, delay))

    def _fire_due(
        self, tx: Tx, compiled: CompiledMachine, snapshot: Instance, now: datetime
    ) -> list[Decision]:
        """The delayed transitions that came due before an event, fired in order.

        An event is decided on the state the instance would be in had the scheduler
        run on time: an order whose 7-day expiry has passed is expired, even if no
        scheduler fired it yet. The timer rows commit with the event; if the event is
        rejected, nothing is written and the scheduler fires them later.
        """
        fired: list[Decision] = []
        if snapshot.wake_at is None or snapshot.wake_at > now:
            return fired
        history = tx.log(snapshot.id)
        current = snapshot
        while current.wake_at is not None and current.wake_at <= now:
            step = fire_timer(compiled, current, history, now, max_bytes=self.max_payload_bytes)
            fired.append(step)
            history.append(step.record)
            current = step.snapshot
        return fired
