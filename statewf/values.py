"""The one rule set for every JSON value that enters the log.

Contexts, event payloads, workflow inputs, event data, step results and outputs all
go through :func:`stored_json`. A value is stored only if it is JSON data that both
stores keep exactly and give back the same:

- no NaN or ±Infinity (JSON has no such numbers; PostgreSQL's JSONB refuses them,
  SQLite would store them as text no JSON reader accepts);
- no NUL character, in a string or in a key (PostgreSQL text cannot hold one);
- nested at most :data:`MAX_DEPTH` deep (deeper values overflow parsers' stacks);
- at most ``max_bytes`` of JSON.

A value breaking a rule raises the caller's error class (an ``InvalidPayload`` for a
payload, an ``InvalidInput`` for an input, ...) naming the value and the path of the
offending part (``$.items[3].price``), before anything is written. The checks run in
C on the encoded bytes; only a value that fails one is walked, to name the path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pydantic_core

from statewf.errors import InvalidPayload, StatewfError

#: The deepest nesting of lists and objects a stored value may have.
MAX_DEPTH = 100

#: A NUL escape in JSON text: ``\u0000`` preceded by an even number of backslashes.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def stored_json(
    value: Any, *, what: str, max_bytes: int, error: type[StatewfError] = InvalidPayload
) -> Any:
    """``value`` as the plain JSON data the log stores, or ``error`` naming what breaks a rule."""
    try:
        encoded = pydantic_core.to_json(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        problem = _depth_problem(value)  # deep (or circular) data fails to encode
        if problem is None:
            problem = (
                f"(of type {type(value).__name__}) is not JSON-serializable: {exc}; use JSON "
                "data (dict, list, str, int, float, bool, None) or a pydantic model"
            )
        raise error(f"{what} {problem}") from None
    if len(encoded) > max_bytes:
        raise error(
            f"{what} is {len(encoded)} bytes of JSON, over the {max_bytes}-byte limit; "
            "store large data elsewhere and pass a reference to it"
        )
    if _NUL_ESCAPE.search(encoded):
        raise error(f"{what} {_find_nul(value)}, which cannot be stored; remove it")
    if encoded.count(b"[") + encoded.count(b"{") >= MAX_DEPTH:  # only then can it be too deep
        try:
            problem = _depth_problem(pydantic_core.from_json(encoded, allow_inf_nan=True))
        except ValueError:  # the parser's own recursion limit, well past ours
            problem = f"is nested deeper than {MAX_DEPTH} levels"
        if problem is not None:
            raise error(f"{what} {problem}")
    try:
        return pydantic_core.from_json(encoded, allow_inf_nan=False)
    except ValueError as exc:
        raise error(
            f"{what} holds NaN or Infinity at {_find_nan(value)}, which JSON cannot store; "
            "use a finite number (or null, or a string)"
        ) from exc


def too_deep(value: Any) -> str | None:
    """What is wrong if ``value`` nests lists and objects deeper than :data:`MAX_DEPTH`.

    Cheap for ordinary data: its JSON text (encoded in C) has fewer brackets than the
    bound; only data that fails to encode, or has that many brackets, is walked.
    """
    try:
        encoded = pydantic_core.to_json(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
        return _depth_problem(value)  # deep, circular, or not JSON at all
    if encoded.count(b"[") + encoded.count(b"{") < MAX_DEPTH:
        return None
    return _depth_problem(value)


def _depth_problem(value: Any) -> str | None:
    stack: list[tuple[Any, int, str]] = [(value, 0, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.items()
        elif isinstance(item, list | tuple):
            children = enumerate(item)
        else:
            continue
        if depth >= MAX_DEPTH:
            return (
                f"is nested deeper than {MAX_DEPTH} levels (at {_short(path)}); "
                "flatten the data or store it elsewhere and pass a reference to it"
            )
        stack.extend((child, depth + 1, _join(path, key)) for key, child in children)
    return None


def _walk(value: Any) -> list[tuple[str, Any, Any]]:
    """Every (path, key, value) inside ``value``, the root first (bounded by the depth check)."""
    out: list[tuple[str, Any, Any]] = []
    stack: list[tuple[str, Any, Any]] = [("$", None, value)]
    while stack:
        path, key, item = stack.pop()
        out.append((path, key, item))
        if isinstance(item, Mapping):
            stack.extend((_join(path, k), k, v) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((_join(path, i), None, v) for i, v in enumerate(item))
    return out


def _find_nul(value: Any) -> str:
    for path, key, item in _walk(_plain(value)):
        if isinstance(key, str) and "\x00" in key:
            return f"has a NUL character in the key at {_short(path)}"
        if isinstance(item, str) and "\x00" in item:
            return f"has a NUL character at {_short(path)}"
    return "has a NUL character"


def _find_nan(value: Any) -> str:
    for path, _, item in _walk(_plain(value)):
        if isinstance(item, float) and not math.isfinite(item):
            return _short(path)
    return "$"


def _plain(value: Any) -> Any:
    """``value`` as plain Python data, NaN kept (models and dataclasses dumped)."""
    return pydantic_core.from_json(pydantic_core.to_json(value), allow_inf_nan=True)


def _short(path: str) -> str:
    return path if len(path) <= 120 else f"{path[:60]}...{path[-40:]}"


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    return f"{path}.{text}" if text.isidentifier() else f"{path}[{text!r}]"
