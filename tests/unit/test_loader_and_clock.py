"""Machines from YAML/JSON data files, and the hand-moved test clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sample_machines import ORDER_JSON, ORDER_YAML, order_machine, order_registry

from statewf import SpecError, load_machine
from statewf.loader import machine_from_mapping, parse_document
from statewf.testing import ManualClock


@pytest.mark.parametrize(
    ("suffix", "text"), [(".yaml", ORDER_YAML), (".yml", ORDER_YAML), (".json", ORDER_JSON)]
)
def test_data_file_order_machine_equals_the_python_one(
    tmp_path: Path, suffix: str, text: str
) -> None:
    path = tmp_path / f"order{suffix}"
    path.write_text(text, encoding="utf-8")
    loaded = load_machine(path, order_registry())
    python = order_machine()
    assert loaded.fingerprint == python.fingerprint
    assert loaded.to_definition() == python.to_definition()
    assert loaded.events_from("pending") == ["PAYMENT_RECEIVED", "CANCEL"]


def test_load_machine_from_a_parsed_mapping_and_str_path(tmp_path: Path) -> None:
    data = json.loads(ORDER_JSON)
    assert load_machine(data, order_registry()).fingerprint == order_machine().fingerprint
    path = tmp_path / "m.json"
    path.write_text(ORDER_JSON, encoding="utf-8")
    assert load_machine(str(path), order_registry()).name == "order-lifecycle"


def test_yaml_keywords_on_off_yes_no_stay_strings() -> None:
    # YAML 1.1 would read these as booleans; machine files must not.
    doc = parse_document(
        "name: m\ninitial: off\nstates:\n"
        "  off: {on: {yes: on}}\n  on: {on: {no: off}, final: false}\n",
        fmt="yaml",
    )
    assert doc["states"]["off"] == {"on": {"yes": "on"}}
    m = machine_from_mapping(doc)
    assert m.initial == "off"
    assert m.events_from("off") == ["yes"]
    assert m.states["on"].final is False
    assert (
        machine_from_mapping(
            parse_document("name: m\ninitial: a\nstates:\n  a: {final: true}\n", fmt="yaml")
        )
        .states["a"]
        .final
        is True
    )


def test_numeric_version_and_lists_of_alternatives() -> None:
    registry = order_registry()
    m = machine_from_mapping(
        {
            "name": "alt",
            "version": 3,
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "GO": [
                            {"target": "b", "guard": ["covers_total"], "payload": "Payment"},
                            {"target": "c", "unless": "covers_total", "payload": "Payment"},
                        ],
                        "TICK": {"internal": True, "action": "mark_paid"},
                    }
                },
                "b": {"final": True},
                "c": {"final": True},
            },
        },
        registry,
    )
    assert m.version == "3"
    assert [t.target for t in m.transitions["a"]["GO"]] == ["b", "c"]
    assert m.transitions["a"]["TICK"][0].internal


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("name: m\ninitial: a\nstates:\n  a: {}\n  a: {}\n", "yaml", "duplicate key 'a' at line 5"),
        (
            "name: m\ninitial: a\nstates:\n  a:\n    on: {GO: a, GO: a}\n",
            "yaml",
            "duplicate key 'GO'",
        ),
        (
            '{"name": "m", "initial": "a", "states": {"a": {}, "a": {}}}',
            "json",
            "duplicate key 'a'",
        ),
        (
            '{"name": "m", "initial": "a", "states": {"a": {"on": {"X": "a", "X": "a"}}}}',
            "json",
            "duplicate key 'X'",
        ),
        ("name: m\n  bad: [indent", "yaml", "not valid YAML"),
        ('{"name": "m",', "json", "not valid JSON"),
    ],
)
def test_malformed_documents_are_spec_errors(text: str, fmt: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_document(text, fmt=fmt)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be a mapping, got list"),
        ("text", "must be a mapping, got str"),
        (None, "must be a mapping, got NoneType"),
        ({"name": "m", "states": {"a": {}}}, r"initial: Field required"),
        ({"name": "m", "initial": "a"}, r"states: Field required"),
        ({"name": "m", "initial": "a", "states": {"a": {}}, "extra": 1}, "extra: Extra inputs"),
        ({"name": "m", "initial": "a", "states": {"a": {"final": "maybe"}}}, "states.a.final"),
        ({"name": "m", "initial": "a", "states": {"a": {"on": {"GO": 5}}}}, "states.a.on.GO"),
        ({"name": "m", "initial": "a", "states": {"a": {"on": {"GO": {"tagret": "a"}}}}}, "tagret"),
        ({"name": 7, "initial": "a", "states": {"a": {}}}, "name"),
        (
            {"name": "m", "initial": "a", "states": {"a": {"on": {"GO": "zz"}}}},
            "unknown state 'zz'",
        ),
        (
            {"name": "m", "initial": "a", "context": "Nope", "states": {"a": {}}},
            "no model named 'Nope'",
        ),
        (
            {
                "name": "m",
                "initial": "a",
                "states": {"a": {"on": {"GO": {"target": "a", "payload": "X"}}}},
            },
            "no model named 'X'",
        ),
        (
            {"name": "m", "initial": "a", "states": {"a": {"on_enter": "ghost"}}},
            "no hook named 'ghost'",
        ),
    ],
)
def test_malformed_mappings_are_spec_errors(data: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        machine_from_mapping(data, order_registry())


def test_missing_file_and_unknown_yaml_tags_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read machine file"):
        load_machine(tmp_path / "nope.yaml")
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo hacked']\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_machine(evil)


# ------------------------------------------------------------------ ManualClock


def test_manual_clock_stands_still_until_moved() -> None:
    clock = ManualClock()
    assert clock.now() == datetime(2030, 1, 1, tzinfo=UTC)
    assert clock.now() == clock.now()
    assert clock.advance(90) == datetime(2030, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert clock.advance(timedelta(hours=1)) == datetime(2030, 1, 1, 1, 1, 30, tzinfo=UTC)
    clock.set(datetime(2031, 1, 1, tzinfo=UTC))
    assert clock.now().year == 2031
    assert clock.now().tzinfo is not None


def test_manual_clock_only_moves_forward_and_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2030, 1, 1))
    clock = ManualClock(datetime(2030, 6, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.set(datetime(2029, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2031, 1, 1))
    assert clock.now() == datetime(2030, 6, 1, tzinfo=UTC)
