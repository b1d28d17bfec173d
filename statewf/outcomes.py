"""Effect outcomes written in batches: no commit of its own per effect, none on the caller's path.

An effect run inline after its transition commits is leased to this process (its
row was written claimed). Its outcome (done, a retry time, dead) is queued here and
written with every other queued outcome in one statement (PostgreSQL; one
transaction elsewhere) by a background thread, ``delay`` seconds after the first
of them was queued, or at once when ``max_batch`` are waiting. Nothing relies on an
outcome before it is written: this process's outbox reads and dispatches
(:meth:`flush` first), closing the engine and the interpreter's exit write the
queue first. If the process dies before, the effect is still pending and leased:
when the lease runs out a dispatcher runs it again (at least once, with the same
idempotency key), exactly as after a crash between an effect and a synchronous
outcome. The delay is far shorter than the lease, so an outcome is written before
its lease could run out; one that lands late (a later attempt claimed the effect)
matches nothing and is reported, as before.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Sequence

from statewf.errors import InvalidInput
from statewf.store import SqlStore
from statewf.store.effects import EffectOutcome

log = logging.getLogger("statewf.outbox")

#: Outcomes waiting at most before they are written at once.
MAX_BATCH = 500

#: Seconds between two attempts to write a batch that failed (the database was away).
RETRY_PAUSE = 1.0


class Outcomes:
    """The queue of effect outcomes not written yet, and the thread that writes them."""

    def __init__(self, store: SqlStore, *, delay: float, max_batch: int = MAX_BATCH) -> None:
        if delay < 0:
            raise InvalidInput(f"effect_outcome_delay must be >= 0 seconds, got {delay}")
        self.store = store
        self.delay = delay
        self.max_batch = max_batch
        self._queued: list[EffectOutcome] = []
        self._names: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()  # guards the queue
        self._writing = threading.Lock()  # one batch on its way at a time, in order
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        #: batches and outcomes written (for tests and benchmarks)
        self.batches = 0
        self.written = 0
        _open.add(self)

    def add(self, outcome: EffectOutcome, name: str) -> None:
        """Queue one attempt's outcome (written at once when ``delay`` is 0)."""
        with self._lock:
            self._queued.append(outcome)
            self._names[(outcome.effect_id, outcome.attempt)] = name
            if self.delay == 0 or self._closed:
                immediate = True
            else:
                immediate = False
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="statewf-outcomes", daemon=True
                    )
                    self._thread.start()
                elif len(self._queued) >= self.max_batch:
                    self._wake.notify()  # else it wakes by itself: no thread switch per add
        if immediate:
            self.flush()

    def pending(self) -> int:
        """How many outcomes are queued, not written yet."""
        with self._lock:
            return len(self._queued)

    def flush(self) -> None:
        """Write every queued outcome now, in the caller's thread (StoreError if it fails:
        the outcomes stay queued)."""
        with self._writing:
            with self._lock:
                batch, self._queued = self._queued, []
            if not batch:
                return
            try:
                with self.store.statement() as tx:
                    written = tx.finish_effects(batch)
            except BaseException:
                with self._lock:
                    self._queued[:0] = batch
                raise
            self.batches += 1
            self.written += len(batch)
            self._report(batch, written)

    def close(self) -> None:
        """Write what is queued and stop the thread. Outcomes that cannot be written
        (the database is away) are logged and dropped: their effects, still leased,
        run again when the lease runs out."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            self._wake.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        _open.discard(self)
        try:
            self.flush()
        except Exception as exc:
            with self._lock:
                lost, self._queued = self._queued, []
            log.warning(
                "%s effect outcome(s) not written on close (%s); those effects run again "
                "when their lease runs out",
                len(lost),
                exc,
            )

    def _report(self, batch: Sequence[EffectOutcome], written: set[int]) -> None:
        with self._lock:
            names = [self._names.pop((o.effect_id, o.attempt), "?") for o in batch]
        for outcome, name in zip(batch, names, strict=True):
            if outcome.effect_id not in written:
                log.warning(
                    "effect %s (outbox id %s): attempt %s outlived its lease; "
                    "a later attempt owns the outcome",
                    name,
                    outcome.effect_id,
                    outcome.attempt,
                )

    def _run(self) -> None:
        # alive only while outcomes wait: an engine nobody closed is not kept alive
        while True:
            with self._lock:
                # the first outcome of a batch waits ``delay`` for the ones after it
                self._wake.wait_for(
                    lambda: self._closed or len(self._queued) >= self.max_batch, self.delay
                )
                if self._closed:
                    return  # close() writes the rest
            try:
                self.flush()
            except Exception:
                log.exception("writing effect outcomes failed; trying again")
                with self._lock:
                    self._wake.wait_for(lambda: self._closed, RETRY_PAUSE)
            with self._lock:
                if self._closed or not self._queued:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return


#: Every open queue, written at the interpreter's exit (an engine nobody closed).
_open: weakref.WeakSet[Outcomes] = weakref.WeakSet()


def _forked() -> None:
    # a forked child has none of its parent's threads, and the parent's queued
    # outcomes are the parent's to write
    for outcomes in list(_open):
        outcomes._thread, outcomes._queued, outcomes._names = None, [], {}
        outcomes._lock = threading.Lock()
        outcomes._writing = threading.Lock()
        outcomes._wake = threading.Condition(outcomes._lock)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


@atexit.register
def _flush_all() -> None:
    for outcomes in list(_open):
        outcomes.close()
