"""Durations for workflow options: the statewf parser, read as seconds.

Every duration parameter (``timeout``, ``retry_delay``, ...) accepts what
:func:`statewf.durations.parse_duration` accepts: seconds, a ``timedelta``, a dict
like ``{"minutes": 5}`` or a string like ``"30s"``, ``"1h 30m"``, ``"3 days"``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from statewf.durations import DurationLike, parse_duration
from statewf.errors import InvalidInput

#: What every duration parameter accepts.
Duration: TypeAlias = DurationLike


def to_seconds(value: Any, *, what: str = "duration") -> float:
    """``value`` in seconds; :class:`~statewf.errors.InvalidInput` naming ``what`` if bad.

    >>> to_seconds("1h 30m"), to_seconds(2.5), to_seconds({"days": 3})
    (5400.0, 2.5, 259200.0)
    """
    try:
        return parse_duration(value).total_seconds()
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None
