"""Waiting for a database connection's socket: on the running event loop, or blocking.

A claim's round trips (:mod:`statewf.store.loop_claim`) are one coroutine that awaits
its socket through one of these. On the event loop, :class:`LoopWaits` watches the
socket; in a thread, :class:`BlockingWaits` blocks on ``poll`` instead, so the same
coroutine never suspends and :func:`run_blocking` runs it to its end with no loop.
"""

from __future__ import annotations

import asyncio
import select as selecting
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

T = TypeVar("T")


class LoopWaits:
    """Waits for a connection's socket on the running event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] | None = None

    def watch(self) -> None:
        """Watch the socket for reading while a claim or release is on its way."""
        self.loop.add_reader(self.fd, self._readable)

    def unwatch(self) -> None:
        """Stop watching the socket."""
        self.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        if self._ready is not None:
            _settle(self._ready)

    async def readable(self) -> None:
        """Return once the socket is readable (level-triggered: never missed)."""
        self._ready = self.loop.create_future()
        try:
            await self._ready
        finally:
            self._ready = None

    async def writable(self) -> None:
        """Return once the socket takes more to send."""
        done = self.loop.create_future()
        self.loop.add_writer(self.fd, _settle, done)
        try:
            await done
        finally:
            self.loop.remove_writer(self.fd)


class BlockingWaits:
    """Waits for a connection's socket in the calling thread (``poll``, or ``select``
    where there is none): a claim run with these never suspends (:func:`run_blocking`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def watch(self) -> None:
        """Nothing to set up."""

    def unwatch(self) -> None:
        """Nothing to undo."""

    async def readable(self) -> None:
        """Block until the socket is readable."""
        self._block(read=True)

    async def writable(self) -> None:
        """Block until the socket takes more to send."""
        self._block(read=False)

    def _block(self, *, read: bool) -> None:
        if hasattr(selecting, "poll"):
            poller = selecting.poll()
            poller.register(self.fd, selecting.POLLIN if read else selecting.POLLOUT)
            while not poller.poll():
                pass
        elif read:
            selecting.select([self.fd], [], [])
        else:
            selecting.select([], [self.fd], [])


Waits = LoopWaits | BlockingWaits


def run_blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its waits are :class:`BlockingWaits`)."""
    try:
        work.send(None)
    except StopIteration as done:
        return cast("T", done.value)
    work.close()
    raise RuntimeError("a blocking claim suspended")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
