"""Live pages: a server-sent event stream that says "changed" when what a page shows did.

A page carries the token of what it shows (``data-watch`` and ``data-token``); its
script opens ``/live?watch=...&since=TOKEN`` and, on a ``change`` event, fetches
its live region again. The server looks for changes every ``poll_interval``
seconds, and at once when PostgreSQL announces a woken run (LISTEN/NOTIFY); on
SQLite it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from statewf import browse
from statewf.errors import InstanceNotFound, InvalidInput
from statewf.store.runs import WakeListener
from visualize.dashboard.security import User

if TYPE_CHECKING:
    from visualize.dashboard.app import Dashboard, Handler

#: Longest life of one stream; the browser reconnects by itself.
STREAM_SECONDS = 300.0
#: Seconds between two keep-alive comments.
KEEPALIVE_SECONDS = 15.0
LISTS = {"instances": "machine", "runs": "workflow", "all": None}


class Wakeups:
    """Streams waiting for a change, woken early by the store's notifications."""

    def __init__(self, dash: Dashboard) -> None:
        self._events: set[asyncio.Event] = set()
        self._listener: WakeListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dash = dash

    def _wake_all(self) -> None:
        for event in list(self._events):
            event.set()

    def _notified(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_all)

    def subscribe(self) -> asyncio.Event:
        """An event set when the store announces something (or never, on SQLite)."""
        if self._listener is None:
            self._loop = asyncio.get_running_loop()
            self._listener = WakeListener(self._dash.engine.store, self._notified)
            self._listener.start()
        event = asyncio.Event()
        self._events.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Stop waking this stream."""
        self._events.discard(event)

    def close(self) -> None:
        """Stop listening to the store."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


def token(dash: Dashboard, user: User, watch: str) -> str:
    """A short digest of what the watched page shows: it changes when the page would."""
    what, _, target = watch.partition(":")
    if what in ("run", "instance"):
        try:
            snap = dash.engine.get(target)
        except InstanceNotFound:
            snap = None
        if snap is None or not user.may_see(snap.resource_id):
            raise InstanceNotFound(f"no {what} {target!r} that you may see", instance_id=target)
        parts = [snap.status, str(snap.version), snap.updated_at.isoformat()]
    elif what == "list" and target in LISTS:
        kind = LISTS[target]
        page = browse.newest(dash.engine, kind=kind, resource_ids=user.resource_ids, limit=20)
        parts = [f"{i.id}/{i.version}/{i.status}" for i in page.items]
    else:
        raise InvalidInput(f"cannot watch {watch!r}; watch run:ID, instance:ID or list:runs")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def stream(dash: Dashboard) -> Handler:
    """``text/event-stream`` of ``change`` events for one watched page."""
    wakeups = Wakeups(dash)
    dash.on_close.append(wakeups.close)

    async def handler(request: Request, user: User) -> Response:
        watch = request.query_params.get("watch", "")
        since = request.query_params.get("since") or await asyncio.to_thread(
            token, dash, user, watch
        )

        async def events() -> AsyncIterator[str]:
            nonlocal since
            wake = wakeups.subscribe()
            started = last_sent = time.monotonic()
            try:
                yield "retry: 2000\n\n"
                while time.monotonic() - started < STREAM_SECONDS:
                    current = await asyncio.to_thread(token, dash, user, watch)
                    if current != since:
                        since = current
                        last_sent = time.monotonic()
                        yield f"event: change\ndata: {current}\n\n"
                    elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                        last_sent = time.monotonic()
                        yield ": keep-alive\n\n"
                    if await request.is_disconnected():
                        return
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=dash.poll_interval)
            finally:
                wakeups.unsubscribe(wake)

        await asyncio.to_thread(token, dash, user, watch)  # refuse what this user may not watch
        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
        )

    return handler
