"""JSON texts read back from the store, decoded to exactly what ``json.loads`` gives.

A long log's documents are the largest part of reading it (``history()``, a run's
resume). pydantic's parser (``pydantic_core.from_json``, already a dependency through
pydantic) decodes them in about three quarters of ``json.loads``'s time and, on every
valid text we know of, to the same values: NaN and the infinities, out-of-range
numbers (``1e400`` is ``inf`` for both), integers of any size, ``-0``, escapes. Where
it refuses a text that ``json.loads`` takes (a lone surrogate escape, ``"\\ud800"``,
nesting deeper than its own limit of a few hundred levels) or that neither takes,
:func:`loads` asks ``json.loads``, so a value or an error is always the stdlib's. At
import a probe of those cases decides whether the installed ``pydantic_core`` is used
at all: a release that decodes any of them otherwise than ``json.loads`` is never
asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

#: Texts the fast parser must decode exactly as ``json.loads`` does (or refuse) to be used.
PROBES = (
    "[NaN,Infinity,-Infinity,1e400,-1e400,1e-400,-0,-0.0,0.1,1E5,5e-324,"
    "1.7976931348623157e308,2.2250738585072011e-308,12345678901234567890.5,"
    "123456789012345678901234567890,-9223372036854775809,18446744073709551616]",
    '{"a":1,"b":[true,false,null],"a":{"c":"\\u00e9\\ud83d\\ude00\\u0000\\"\\\\\\/\\b\\f\\n\\r\\t"}}',
    '"\\ud800"',
    '"\\udc00x"',
    '"\\ud800\\ud800"',
    "[1,]",
    "01",
    "\ufeff[1]",
)


def same(a: Any, b: Any) -> bool:
    """True if two decoded JSON values are the same: types, order of keys, NaN as NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def _agrees(fast: Callable[[str], Any], text: str) -> bool:
    """True if ``fast`` decodes ``text`` as ``json.loads`` does, or refuses it."""
    try:
        got = fast(text)
    except Exception:
        return True  # refused: loads() asks json.loads
    try:
        return same(got, json.loads(text))
    except Exception:
        return False  # accepted what json.loads refuses


def _fast_parser() -> Callable[[str], Any] | None:
    """pydantic_core's ``from_json``, if it decodes every probe as ``json.loads`` does."""
    try:
        from pydantic_core import from_json
    except ImportError:  # pragma: no cover - pydantic always brings it
        return None
    if not all(_agrees(from_json, text) for text in PROBES):
        return None  # pragma: no cover - another pydantic_core release
    return from_json


_FAST = _fast_parser()


def loads(text: str) -> Any:
    """``json.loads(text)``: its value or its error, decoded faster when it can be."""
    if _FAST is not None:
        try:
            return _FAST(text)
        except Exception:
            pass  # refused: the stdlib's value or error, as before
    return json.loads(text)


def uses_fast_parser() -> bool:
    """True if :func:`loads` tries pydantic_core's parser first (the probes agreed)."""
    return _FAST is not None
