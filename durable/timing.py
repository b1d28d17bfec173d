"""Waiting on the engine's clock, so a :class:`statewf.testing.ManualClock` drives it too.

With the wall clock this is ``asyncio.sleep``. With any other clock the wait polls
the clock every few milliseconds of real time, so a test that advances a manual clock
by an hour sees the retry or timeout fire at once, without waiting.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from statewf.clock import Clock, SystemClock

#: Real seconds between looks at a non-wall clock.
POLL_SECONDS = 0.002


async def sleep_until(clock: Clock, when: datetime) -> None:
    """Return once ``clock.now() >= when``."""
    realtime = isinstance(clock, SystemClock)
    while True:
        remaining = (when - clock.now()).total_seconds()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining if realtime else POLL_SECONDS)
