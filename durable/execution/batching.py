"""Shared commits: the step rows of runs executing at once, written together.

Each run writes one row at a time (its writer's lock), and its next step starts only
after that row is committed. Across runs nothing orders the writes, so rows that are
ready while an earlier batch is on its way to the database wait for it to return and
then go together, in one transaction (:func:`statewf.store.batched.write_rows`). A row
that finds nothing in flight goes at once: one run alone waits for nothing, and under
load the batches grow by themselves, with no timer deciding when to flush.

Each writer gets its own row's outcome; a batch changes how rows reach the database,
not what any writer learns from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from statewf.store import SqlStore
from statewf.store.batched import Outcome, Row, write_rows

#: Rows per shared commit at most.
MAX_ROWS = 64

#: Batches on their way to the database at once (each on a connection of its own).
MAX_IN_FLIGHT = 2


class RowBatcher:
    """Collects conditional writes of distinct runs and commits them in batches."""

    def __init__(
        self,
        store: SqlStore,
        executor: Executor | None,
        *,
        max_rows: int = MAX_ROWS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.executor = executor
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self._waiting: list[tuple[Row, asyncio.Future[Outcome]]] = []
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: rows written and batches sent (for benchmarks and tests)
        self.rows = 0
        self.batches = 0

    async def write(self, row: Row) -> bool:
        """Write ``row`` in the next batch; True if written, False if its run had moved."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (an engine reopened): start afresh
            self._loop, self._waiting, self._in_flight = loop, [], 0
        done: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append((row, done))
        if self._in_flight < self.max_in_flight:
            self._send(loop)
        outcome = await done
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._waiting[: self.max_rows]
        del self._waiting[: self.max_rows]
        self._in_flight += 1
        self.rows += len(batch)
        self.batches += 1
        rows = [row for row, _ in batch]
        sent = loop.run_in_executor(self.executor, write_rows, self.store, rows)
        sent.add_done_callback(self._landed(loop, batch))

    def _landed(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Row, asyncio.Future[Outcome]]]
    ) -> Callable[[asyncio.Future[list[Outcome]]], Any]:
        def landed(sent: asyncio.Future[list[Outcome]]) -> None:
            self._in_flight -= 1
            error = sent.exception() if not sent.cancelled() else asyncio.CancelledError()
            outcomes: list[Outcome] | None = None if error is not None else sent.result()
            for i, (_, done) in enumerate(batch):
                if done.done():
                    continue  # its writer was cancelled meanwhile
                if outcomes is None:
                    done.set_exception(error or RuntimeError("batch lost"))
                else:
                    done.set_result(outcomes[i])
            if self._waiting and self._in_flight < self.max_in_flight:
                self._send(loop)

        return landed
