"""Loaded at interpreter start by a worker process whose ``PYTHONPATH`` starts here.

It moves the process's wall clock (``datetime.now``, ``datetime.utcnow``,
``time.time``) ``WORKER_PROC_SKEW`` seconds ahead, like a machine whose clock is
off: everything the process reads as "now" is skewed, the database's clock is not.
"""

from __future__ import annotations

import datetime as _dt
import os
import time as _time

_SKEW = float(os.environ.get("WORKER_PROC_SKEW", "0") or 0)


class _SkewedDateTime(_dt.datetime):
    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _SkewedDateTime:  # type: ignore[override]
        return super().now(tz) + _dt.timedelta(seconds=_SKEW)

    @classmethod
    def utcnow(cls) -> _SkewedDateTime:  # type: ignore[override]
        return super().utcnow() + _dt.timedelta(seconds=_SKEW)


if _SKEW:
    _real_time = _time.time
    _dt.datetime = _SkewedDateTime  # type: ignore[misc]
    _time.time = lambda: _real_time() + _SKEW
