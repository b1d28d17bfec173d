"""LISTEN for due runs from the event loop itself (PostgreSQL): no thread in between.

:class:`statewf.store.runs.WakeListener` is a thread that waits for notifications
and hands each to the event loop (a wake-up of the thread, then of the loop, and the
GIL between them). A scheduler that runs on an event loop listens here instead: an
asyncio task reads the connection (psycopg's asynchronous connection, which the loop
watches), and ``on_wake`` is called in the loop as a notification arrives. It is a
hint, as there: the instances table stays the truth and schedulers poll it anyway.
A lost connection is opened again every few seconds. A loop that cannot watch
sockets (Windows' proactor) gets the thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

import psycopg
import psycopg.sql

from statewf.store.runs import WakeListener, wake_channel
from statewf.store.sql import SqlStore

log = logging.getLogger("statewf")

#: Seconds between two tries to open a lost listening connection.
RETRY = 2.0


class LoopListener:
    """A task of the running event loop that LISTENs for due runs and calls ``on_wake``
    (in the loop) for each notification. On SQLite it does nothing."""

    def __init__(self, store: SqlStore, on_wake: Callable[[], object]) -> None:
        self._store = store
        self._on_wake = on_wake
        self._task: asyncio.Task[None] | None = None
        self._thread: WakeListener | None = None

    def start(self) -> None:
        """Start listening (PostgreSQL only); call it in the event loop's thread."""
        if self._store.dialect != "postgresql" or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="statewf-wake")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        task, self._task = self._task, None
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)

    async def _run(self) -> None:
        if not _watches_sockets(asyncio.get_running_loop()):
            # a loop that cannot watch sockets (Windows' proactor): the listening thread
            loop = asyncio.get_running_loop()
            on_wake = self._on_wake
            self._thread = WakeListener(self._store, lambda: loop.call_soon_threadsafe(on_wake))
            self._thread.start()
            return
        url = self._store.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        listen = psycopg.sql.SQL("LISTEN {}").format(
            psycopg.sql.Identifier(wake_channel(self._store))
        )
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            except psycopg.Error as exc:
                log.debug("cannot listen for due runs yet: %s", exc)
                await asyncio.sleep(RETRY)
                continue
            try:
                await conn.execute(listen)
                async with contextlib.aclosing(conn.notifies()) as notes:
                    async for _ in notes:
                        self._on_wake()
            except psycopg.Error as exc:
                log.debug("the connection listening for due runs was lost: %s", exc)
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            await asyncio.sleep(RETRY)


def _watches_sockets(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` can watch a socket (``add_reader``; Windows' proactor cannot)."""
    ours, theirs = socket.socketpair()
    try:
        loop.add_reader(ours.fileno(), lambda: None)
        loop.remove_reader(ours.fileno())
        return True
    except NotImplementedError:
        return False
    finally:
        ours.close()
        theirs.close()
