"""The log reader's JSON decoding gives exactly ``json.loads``'s value or error.

``statewf.store.jsondecode.loads`` tries pydantic_core's parser first and asks
``json.loads`` whenever that one refuses a text; these properties compare the two on
random documents (unicode, integers beyond 64 bits, NaN and the infinities, nesting,
duplicate keys) and on texts made of awkward pieces (numbers out of range, lone
surrogate escapes, invalid JSON), types, key order and NaN included.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statewf.store import jsondecode
from statewf.store.jsondecode import loads, same

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

#: pieces of JSON-ish text: valid and invalid numbers, escapes, structure
pieces = st.sampled_from(
    [
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "1e-400",
        "-0",
        "-0.0",
        "01",
        "1.",
        ".5",
        "+1",
        "1E5",
        "5e-324",
        "1.7976931348623157e308",
        "2.2250738585072011e-308",
        "12345678901234567890.5",
        "123456789012345678901234567890",
        "18446744073709551616",
        "-9223372036854775809",
        '"\\ud800"',
        '"\\udc00x"',
        '"\\ud83d\\ude00"',
        '"\\u0000"',
        '"\\x41"',
        '"é✓😀"',
        '"a\nb"',
        "true",
        "null",
        "True",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        '"k"',
        " ",
    ]
)


def outcome(decode: Any, text: str) -> tuple[str, Any]:
    """What ``decode(text)`` gives: ``("value", v)`` or ``("error", the exception's type)``."""
    try:
        return "value", decode(text)
    except Exception as exc:
        return "error", type(exc)


def assert_as_stdlib(text: str) -> None:
    """``loads(text)`` gives ``json.loads(text)``'s value, or raises its error."""
    want, got = outcome(json.loads, text), outcome(loads, text)
    assert want[0] == got[0], (text, want, got)
    if want[0] == "value":
        assert same(got[1], want[1]), (text, want, got)
        assert repr(got[1]) == repr(want[1])
    else:
        assert got[1] is want[1]


@settings(max_examples=400, deadline=None)
@given(json_values, st.booleans())
def test_documents_decode_as_json_loads_does(value: Any, ascii_only: bool) -> None:
    assert_as_stdlib(json.dumps(value, ensure_ascii=ascii_only))
    # as the log reader joins them: an array of every row's documents
    assert_as_stdlib("[" + ",".join([json.dumps(value, ensure_ascii=ascii_only)] * 3) + "]")


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=8))
def test_awkward_texts_decode_or_fail_as_json_loads_does(parts: list[str]) -> None:
    assert_as_stdlib("".join(parts))
    assert_as_stdlib("[" + ",".join(parts) + "]")


@pytest.mark.parametrize("text", jsondecode.PROBES)
def test_the_probes_decode_as_json_loads_does(text: str) -> None:
    assert_as_stdlib(text)


def test_the_fast_parser_is_used_where_it_agrees() -> None:
    # pydantic_core of this environment agrees on every probe: the fast path is taken
    assert jsondecode.uses_fast_parser()
    assert same(loads('{"a":[1,2.5,"é"],"b":null}'), {"a": [1, 2.5, "é"], "b": None})


def test_same_tells_values_apart() -> None:
    assert same(float("nan"), float("nan"))
    assert not same(0.0, -0.0)
    assert not same(1, 1.0)
    assert not same(True, 1)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same([1], [1, 2])


@pytest.mark.parametrize("depth", [50, 150, 300, 999, 1500])
def test_deep_nesting_decodes_or_fails_as_json_loads_does(depth: int) -> None:
    # pydantic_core refuses deep texts sooner than json.loads: loads asks json.loads then
    assert_as_stdlib("[" * depth + "]" * depth)
    assert_as_stdlib('{"a":' * depth + "1" + "}" * depth)
