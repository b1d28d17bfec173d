"""Checks of the ids and event names callers pass in (instances, resources, keys, events)."""

from __future__ import annotations

import re
from typing import Any

from statewf.errors import InvalidInput
from statewf.spec import MAX_NAME_LENGTH
from statewf.store.schema import ID_LENGTH

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An ASCII string is printable exactly when it holds none of _CONTROL's characters: two
# C calls that answer the commonest ids and names without the regular expression engine.


def check_id(value: Any, what: str) -> str:
    """``value`` if it is a usable id (1-255 characters, no control characters)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > ID_LENGTH:
        raise InvalidInput(f"{what} {value[:40]!r}... is longer than {ID_LENGTH} characters")
    if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
        raise InvalidInput(f"{what} {value[:60]!r} contains control characters")
    return value


def check_event_name(value: Any) -> str:
    """``value`` if it is a usable event name."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"event name must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"event name {value[:40]!r}... is longer than {MAX_NAME_LENGTH} characters"
        )
    if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
        raise InvalidInput(f"event name {value[:60]!r} contains control characters")
    return value
