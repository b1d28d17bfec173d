"""Durations: seconds, ``timedelta`` or human strings like ``"30s"``, ``"1h 30m"``, ``"3 days"``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypeAlias

from statewf.errors import InvalidInput

#: What every duration parameter accepts.
Duration: TypeAlias = float | int | timedelta | str

_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*,?", re.IGNORECASE)


def to_seconds(value: Duration, *, what: str = "duration") -> float:
    """``value`` in seconds; :class:`~statewf.errors.InvalidInput` for a bad or negative one.

    >>> to_seconds("1h 30m"), to_seconds(2.5), to_seconds("3 days")
    (5400.0, 2.5, 259200.0)
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be seconds, a timedelta or a string like '30s'")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse(value, what)
    else:
        raise InvalidInput(
            f"{what} must be seconds, a timedelta or a string like '30s', got {value!r}"
        )
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise InvalidInput(f"{what} must be a finite, non-negative duration, got {value!r}")
    return seconds


def _parse(text: str, what: str) -> float:
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _PART.finditer(stripped):
        if match.start() != pos:
            break
        unit = _UNITS.get(match.group(2).lower())
        if unit is None:
            raise InvalidInput(
                f"{what} {text!r} has an unknown unit {match.group(2)!r}; "
                "use ms, s, m, h, d or w (or their long names)"
            )
        total += float(match.group(1)) * unit
        pos = match.end()
    if pos != len(stripped) or not stripped:
        raise InvalidInput(f"{what} {text!r} is not a duration; write e.g. '30s', '2h', '1h 30m'")
    return total
