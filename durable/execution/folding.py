"""A woken run's first row in its claim's transaction: one commit for both.

A waiting run made due (an event sent, a timer come) is claimed with a ``wake`` row,
and its replay then writes the wait's result (a ``step`` row: the event it takes, or
the sleep's end) before anything else happens. Written by itself that row is a
second commit on the path from the event to the next step. Here the scheduler's claim
(sent from the event loop, :mod:`statewf.store.loop_claim`) hands its woken runs over
once their claim rows and logs are answered, with the transaction still open and the
rows locked: each run is spawned at once and replays, by its own code, to its first
write; a wait's result goes into the claim's transaction and commits with it; any
other first row (a step's, a patch marker) waits for the claim's commit and then takes
the ordinary path. The run's writer sees the same answer as from
:class:`~durable.execution.batching.RowBatcher`: written, moved, or a lost connection
(a transient :class:`~statewf.errors.StoreError`, after which it looks at the log
before writing again).

What stays as it was: the rows are locked from the claim's select to its commit,
every row is conditional on the version the claim gave the run, and the claim and
the wait's result commit together or not at all. A worker that dies before the commit
leaves neither (the run is still waiting, its event unconsumed: the next claim wakes it
again); one that dies after leaves both (a replay returns the result from the log).
A claim that fails or is cancelled half-way hands each held row a lost connection's
error, so its writer reloads: the claim's rows are there (committed after all) or its
lease is not (it stops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from durable.control.claim import ClaimedRun
from durable.execution.runner import RunExecutor
from durable.execution.writer import RunHost
from durable.log.records import KIND_SLEEP, KIND_STEP, KIND_WAIT
from statewf.errors import StoreError
from statewf.store.batched import Outcome, Row, loop_args, loop_writable
from statewf.store.claim_statements import Folded

#: Most woken runs one claim replays before its commit (its locks wait for them).
FOLD_MAX = 16
#: Event loop turns the woken runs get to reach their first write.
_TURNS = 4
#: The waits whose result needs no workflow code beyond the replay to write.
_FOLDED_WAITS = (KIND_WAIT, KIND_SLEEP)


class Spawner(Protocol):
    """What a fold needs of the :class:`~durable.execution.executor.Executor`."""

    def executor_of(self, item: ClaimedRun) -> RunExecutor:
        """The executor of a claimed run."""

    def spawn(self, executor: RunExecutor) -> None:
        """Execute a run as a task of this process."""


def foldable(row: Row) -> bool:
    """Whether ``row`` is a wait's result that may commit with the claim that woke it."""
    record = row.record
    return record.kind == KIND_STEP and record.meta.get("wait") in _FOLDED_WAITS and not row.release


class WakeFold:
    """One scheduler claim's fold (:class:`~durable.control.claim.RunFold`)."""

    def __init__(self, spawner: Spawner, host: RunHost) -> None:
        self.spawner = spawner
        self.host = host
        #: the runs spawned by the fold, before the claim's commit
        self.spawned: set[str] = set()
        #: rows sent in the claim's transaction, and rows left for after its commit
        self._folded: list[asyncio.Future[Outcome | None]] = []
        self._after: list[asyncio.Future[Outcome | None]] = []
        self._rows: list[Row] = []
        #: the claim's transaction is open (rows wait for it), and rows may still join it
        self._open = True
        self._collecting = False

    async def rows(self, woken: list[ClaimedRun]) -> Sequence[Folded]:
        """Spawn the woken runs and let each replay to its first write; the writes of
        waits' results, as statements for the claim's transaction."""
        store = self.host.store
        if not loop_writable(store):
            return ()
        batcher = self.host.batcher
        self._collecting = True
        for item in woken[:FOLD_MAX]:
            try:
                executor = self.spawner.executor_of(item)
            except Exception:  # built again after the commit, where its error surfaces
                continue
            run_id = executor.run_id
            batcher.held[run_id] = self._hold
            self.spawned.add(run_id)
            self.spawner.spawn(executor)
        for _ in range(_TURNS):
            await asyncio.sleep(0)
            if not any(run_id in batcher.held for run_id in self.spawned):
                break
        # a run not at its first write yet writes it after the commit (held till then:
        # sent now, its conditional write would not see the claim's row)
        self._collecting = False
        out: list[Folded] = []
        held, self._rows = self._rows, []
        for row, done in zip(held, self._folded, strict=True):
            sent = loop_args(store, [row])
            if sent is None:
                self._after.append(done)
            else:
                out.append(sent)
                self._rows.append(row)
        self._folded = [f for f in self._folded if f not in self._after]
        return out

    async def _hold(self, row: Row) -> Outcome | None:
        done: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        if self._collecting and foldable(row):
            self._rows.append(row)
            self._folded.append(done)
        elif self._open:
            self._after.append(done)  # the ordinary path, once the claim committed
        else:
            return None
        return await done

    def committed(self, returned: Sequence[int]) -> None:
        """The claim committed: each folded row was written if its statement returned one."""
        self._open = False
        for done, count in zip(self._folded, returned, strict=True):
            if not done.done():
                done.set_result(count > 0)
        self._end(None)

    def abandon(self) -> None:
        """The claim failed or was cancelled: whether it committed is not known here, so
        each folded row's writer is told its connection was lost (it reloads and sees)."""
        self._open = False
        for done in self._folded:
            if not done.done():
                done.set_result(
                    StoreError("the claim that carried this row failed before its answer")
                )
        self._end(None)

    def _end(self, outcome: Outcome | None) -> None:
        self._folded = []
        after, self._after = self._after, []
        for done in after:
            if not done.done():
                done.set_result(outcome)
        for run_id in self.spawned:
            self.host.batcher.held.pop(run_id, None)
