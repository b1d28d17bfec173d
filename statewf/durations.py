"""Durations and instants as people write them: ``"3 days"``, ``"2h"``, ``{"weeks": 1}``.

Used by delayed machine transitions and by durable workflows (sleeps, timeouts,
retry delays), so every part of statewf reads time spans the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeAlias

from statewf.errors import InvalidInput

DurationLike: TypeAlias = "str | int | float | timedelta | Mapping[str, float]"
InstantLike: TypeAlias = "str | datetime | date | Mapping[str, str | datetime | date]"

_UNITS = {
    "ms": "milliseconds",
    "msec": "milliseconds",
    "millisecond": "milliseconds",
    "milliseconds": "milliseconds",
    "s": "seconds",
    "sec": "seconds",
    "secs": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "wk": "weeks",
    "week": "weeks",
    "weeks": "weeks",
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DICT_KEYS = {"weeks", "days", "hours", "minutes", "seconds", "milliseconds"}
#: The longest span statewf accepts (about 100 years): catches unit mistakes.
MAX_DURATION = timedelta(days=36_600)


def _bad(value: Any, why: str) -> InvalidInput:
    return InvalidInput(
        f"cannot read {value!r} as a duration: {why}; write e.g. '30 seconds', '2h', "
        "'1 hour 30 minutes', {'days': 7} or a timedelta"
    )


def parse_duration(value: Any) -> timedelta:
    """A non-negative :class:`timedelta` from a string, number of seconds, dict or timedelta."""
    if isinstance(value, bool):
        raise _bad(value, "a boolean is not a duration")
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _bad(value, "not a finite number")
        if abs(value) > MAX_DURATION.total_seconds():
            raise _bad(value, "longer than 100 years")
        result = timedelta(seconds=value)
    elif isinstance(value, Mapping):
        unknown = set(value) - _DICT_KEYS
        if unknown or not value:
            raise _bad(value, f"keys must be some of {sorted(_DICT_KEYS)}")
        try:
            result = timedelta(**{k: float(v) for k, v in value.items()})
        except (TypeError, ValueError, OverflowError) as exc:
            raise _bad(value, str(exc)) from exc
    elif isinstance(value, str):
        result = _parse_text(value)
    else:
        raise _bad(value, f"unsupported type {type(value).__name__}")
    if result < timedelta(0):
        raise _bad(value, "durations cannot be negative")
    if result > MAX_DURATION:
        raise _bad(value, "longer than 100 years")
    return result


def _parse_text(value: str) -> timedelta:
    text = value.strip().lower().replace(",", " ").replace(" and ", " ")
    if not text:
        raise _bad(value, "empty")
    pos = 0
    total = timedelta(0)
    for match in _PART.finditer(text):
        if text[pos : match.start()].strip():
            raise _bad(value, f"unexpected {text[pos : match.start()].strip()!r}")
        unit = _UNITS.get(match.group(2))
        if unit is None:
            raise _bad(value, f"unknown unit {match.group(2)!r}")
        try:
            total += timedelta(**{unit: float(match.group(1))})
        except OverflowError as exc:
            raise _bad(value, "too large") from exc
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise _bad(value, "expected a number followed by a unit")
    return total


def format_duration(span: timedelta) -> str:
    """A short human form: ``7 days``, ``1 hour 30 minutes``, ``250 ms``."""
    if span < timedelta(seconds=1):
        return f"{round(span.total_seconds() * 1000)} ms"
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts)


def parse_instant(value: Any) -> datetime:
    """An aware UTC datetime from what people write for a point in time.

    Accepted: an aware datetime; an ISO-8601 string with an offset or ``Z``; a date
    (a ``date`` or a date-only string such as ``"2027-01-01"``), read as midnight
    UTC; and ``{"date": <any of these>}``. Naive datetimes (and strings with a time
    but no offset) are rejected: the engine cannot guess which time zone they meant.
    """
    if isinstance(value, Mapping):
        if set(value) != {"date"}:
            raise InvalidInput(
                f"cannot read {dict(value)!r} as a point in time; a mapping must be "
                "{'date': ...} with a datetime or an ISO 8601 string"
            )
        value = value["date"]
        if isinstance(value, Mapping):
            raise InvalidInput("{'date': ...} takes a datetime or a string, not a mapping")
    if isinstance(value, str):
        text = value.strip()
        if _DATE_ONLY.fullmatch(text):
            try:
                return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
            except ValueError as exc:
                raise InvalidInput(f"{value!r} is not a calendar date: {exc}") from exc
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(
                f"cannot read {value!r} as a date and time; use ISO 8601 with an offset, "
                "e.g. '2027-01-01T09:00:00Z', or a date such as '2027-01-01'"
            ) from exc
        value = parsed
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, datetime):
        raise InvalidInput(
            f"expected a datetime, a date, an ISO-8601 string or {{'date': ...}}, got {value!r}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"{value.isoformat()} has no time zone; pass an aware datetime "
            "(e.g. datetime(..., tzinfo=UTC)) or a string ending in Z or +HH:MM"
        )
    return value.astimezone(UTC)


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def to_seconds(value: Any, *, what: str = "duration") -> float:
    """``value`` in seconds; :class:`~statewf.errors.InvalidInput` naming ``what`` if bad.

    >>> to_seconds("1h 30m"), to_seconds(2.5), to_seconds({"days": 3})
    (5400.0, 2.5, 259200.0)
    """
    try:
        return parse_duration(value).total_seconds()
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None
