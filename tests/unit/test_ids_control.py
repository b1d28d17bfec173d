"""Ids and event names with control characters are refused, every other one taken
(statewf/ids.py answers printable ASCII without its regular expression)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from statewf.errors import InvalidInput
from statewf.ids import check_event_name, check_id

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CHARACTERS = [chr(i) for i in range(160)] + ["é", "\u2028", "\u200b", "日", "\U0001f600"]


@pytest.mark.parametrize("check", [lambda v: check_id(v, "instance id"), check_event_name])
def test_a_control_character_anywhere_is_refused_and_nothing_else(
    check: Callable[[str], str],
) -> None:
    for character in CHARACTERS:
        for value in (character, f"ab{character}", f"{character}cd", f"é{character}x"):
            if CONTROL.search(value):
                with pytest.raises(InvalidInput, match="control characters"):
                    check(value)
            else:
                assert check(value) == value
