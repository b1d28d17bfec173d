"""Waiting on the engine's clock, so a :class:`statewf.testing.ManualClock` drives it too.

With the wall clock a wait is ``asyncio.sleep``. With any other clock it looks at the
clock every :data:`MANUAL_TICK` seconds of real time, so a test that advances a manual
clock by an hour sees the retry, timeout or wake-up happen at once, without waiting.

:class:`WakeLoop` is the one loop that sleeps until the next wake-up: the scheduler of
runs and a worker's machine timers both run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from statewf.clock import Clock, SystemClock
from statewf.errors import StatewfError
from statewf.store import SqlStore
from statewf.store.listen import LoopListener

log = logging.getLogger("durable")
T = TypeVar("T")

#: Real seconds between looks at a manual (test) clock.
MANUAL_TICK = 0.005
#: The shortest wait between two passes of a wake loop (no busy loop, whatever happens).
MIN_PAUSE = 0.005


async def sleep_until(clock: Clock, when: datetime) -> None:
    """Return once ``clock.now() >= when``."""
    realtime = isinstance(clock, SystemClock)
    while True:
        remaining = (when - clock.now()).total_seconds()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining if realtime else MANUAL_TICK)


async def within_deadline(
    work: Coroutine[Any, Any, T],
    clock: Clock,
    deadline: datetime | None,
    expired: Callable[[], T],
) -> T:
    """``work``'s result, run in a task of its own until ``deadline`` (None: no limit).

    At the deadline ``expired()`` gives the answer, called before the task is
    cancelled and waited for (so the work's code sees what it set). A cancellation of
    the caller cancels the task too, and waits for it, before it goes on.
    """
    main = asyncio.ensure_future(work)
    watcher = None if deadline is None else asyncio.ensure_future(sleep_until(clock, deadline))
    waiting: set[asyncio.Future[Any]] = {main} if watcher is None else {main, watcher}
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        main.cancel()
        await asyncio.wait({main})
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    if main in done:
        return main.result()
    answer = expired()
    main.cancel()
    await asyncio.wait({main})
    return answer


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it is done.

    Cancelled again until it ends: ``asyncio.wait_for`` (Python 3.11) can drop a
    cancellation that arrives as its inner wait completes (a poke, say). Waiting
    with ``asyncio.wait`` leaves a cancellation of the caller itself alone.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)


class WakeLoop:
    """Runs ``work`` again and again: when the wake-up time it returned comes, when poked,
    and at least every ``poll_interval`` real seconds.

    ``work`` does one pass and returns the next known wake-up time (None: none known).
    An exception in a pass (the database is away, say) is logged and the loop tries
    again at the next poll. With ``listen`` (a store), a PostgreSQL NOTIFY from another
    process pokes the loop at once (a hint only: the next pass reads the truth).
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[datetime | None]],
        clock: Clock,
        poll_interval: float,
    ) -> None:
        self.name = name
        self.work = work
        self.clock = clock
        self.poll_interval = poll_interval
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: LoopListener | None = None

    def start(self, listen: SqlStore | None = None) -> None:
        """Start the loop as a task of the running event loop."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=self.name)
        if listen is not None:
            # read by the loop itself: a notification pokes the loop with no thread between
            self._listener = LoopListener(listen, self._poke.set)
            self._listener.start()

    def poke(self) -> None:
        """Make the loop do its next pass now."""
        self._poke.set()

    async def stop(self) -> None:
        """Stop the loop (and its listener) and wait until it has stopped."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _run(self) -> None:
        realtime = isinstance(self.clock, SystemClock)
        while True:
            # cleared before the pass, not after it: a poke that arrives while the pass
            # runs (a NOTIFY committed after its claim read) makes another pass at once
            # instead of being lost until the next poll
            self._poke.clear()
            try:
                wake = await self.work()
            except StatewfError as exc:  # the database is away, say: the next poll again
                log.warning("%s: %s: %s", self.name, type(exc).__name__, exc)
                wake = None
            except Exception:  # a bug, not an outage: loud, with its traceback
                log.exception(
                    "%s: the pass failed unexpectedly; trying again at the next poll", self.name
                )
                wake = None
            until = time.monotonic() + self.poll_interval
            while not self._poke.is_set():
                left = until - time.monotonic()
                if left <= 0:
                    break
                if wake is not None and self.clock.now() >= wake:
                    break
                pause = left
                if wake is not None:
                    ahead = (wake - self.clock.now()).total_seconds()
                    pause = min(left, ahead) if realtime else min(left, MANUAL_TICK)
                with contextlib.suppress(TimeoutError):
                    # never a busy spin, whatever the clock and the database say
                    await asyncio.wait_for(self._poke.wait(), timeout=max(pause, MIN_PAUSE))
