"""Hostile input: a clear StatewfError, never a driver traceback, never a partial write."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sample_machines as sm
from db_snapshot import dump_tables

import statewf
from statewf import (
    Engine,
    InstanceNotFound,
    InvalidInput,
    InvalidPayload,
    Machine,
    State,
    StatewfError,
    UnknownEvent,
    transition,
)

SQL = "'; DROP TABLE statewf_instances; --"

#: Strings that are legal ids and must round-trip exactly.
LEGAL = [
    SQL,
    "quote\" and ' and `back` and \\",
    "Robert'); DROP TABLE students;--",
    "1 OR 1=1",
    "%_*?[]{}$(rm -rf /)",
    "ünïcødé ñ 中文 العربية עברית",
    "emoji 😀🎉👩‍👩‍👧 flags 🇩🇪",
    "zero\u200bwidth and\ufeffbom",
    "\u202eright-to-left override",
    "   spaces   ",
    "x" * 255,
    "😀" * 255,
]

#: Strings that are not usable ids: (value, what the message must say).
ILLEGAL: list[tuple[Any, str]] = [
    ("", "non-empty string"),
    ("nul\x00byte", "control characters"),
    ("new\nline", "control characters"),
    ("tab\tbed", "control characters"),
    ("del\x7f", "control characters"),
    ("x" * 10_000, "longer than 255"),
    ("x" * 256, "longer than 255"),
    ("lone \ud800 surrogate", "cannot be stored"),
    (12345, "non-empty string"),
    (None, "non-empty string"),
]

CTX = {"n": 0, "moves": 0}


@pytest.fixture
def engine(db: dict[str, Any]) -> Iterator[Engine]:
    with Engine(**db, max_payload_bytes=4096) as eng:
        eng.register(sm.counter_machine(), sm.order_machine())
        yield eng


def rejects(
    engine: Engine, call: Callable[[], Any], error: type[StatewfError], match: str | None = None
) -> StatewfError:
    """``call`` raises ``error`` (a statewf error, not a driver one) and writes nothing."""
    before = dump_tables(engine)
    with pytest.raises(error, match=match) as exc:
        call()
    assert type(exc.value).__module__ == "statewf.errors"
    assert dump_tables(engine) == before
    return exc.value


def test_legal_hostile_ids_round_trip_exactly(engine: Engine) -> None:
    for value in LEGAL:
        check_round_trip(engine, value)


def check_round_trip(engine: Engine, value: str) -> None:
    inst = engine.create("counter", id=value, resource_id=value, idempotency_key=value, context=CTX)
    assert inst.id == value
    sent = engine.send(value, "INC", resource_id=value)
    assert sent.id == value
    assert sent.resource_id == value
    got = engine.get(value, resource_id=value)
    assert (got.id, got.resource_id, got.idempotency_key) == (value, value, value)
    assert [r.instance_id for r in engine.history(value)] == [value, value]
    assert [i.id for i in engine.list(resource_id=value).items] == [value]
    again = engine.create("counter", idempotency_key=value, resource_id=value, context=CTX)
    assert again.id == value
    assert engine.state_at(value, 1).id == value
    near_miss = value[:-1] + ("y" if value[-1] != "y" else "z")
    rejects(engine, lambda: engine.get(near_miss), InstanceNotFound)
    rejects(engine, lambda: engine.send(near_miss, "INC"), InstanceNotFound)


def test_illegal_ids_are_invalid_input_everywhere(engine: Engine) -> None:
    inst = engine.create("counter", context=CTX)
    for value, message in ILLEGAL:
        check_rejected_everywhere(engine, value, message)
    assert engine.get(inst.id).version == 1


def check_rejected_everywhere(engine: Engine, value: Any, message: str) -> None:
    calls: list[Callable[[], Any]] = []
    if value is not None:  # None means "not given" to create
        calls += [
            lambda: engine.create("counter", id=value, context=CTX),
            lambda: engine.create("counter", resource_id=value, context=CTX),
            lambda: engine.create("counter", idempotency_key=value, context=CTX),
        ]
    calls += [
        lambda: engine.get(value),
        lambda: engine.send(value, "INC"),
        lambda: engine.history(value),
        lambda: engine.state_at(value, 1),
        lambda: engine.allowed_events(value),
    ]
    for call in calls:
        rejects(engine, call, InvalidInput, message)
    if isinstance(value, str) and value:
        for filters in ({"machine": value}, {"state": value}, {"resource_id": value}):
            if "\x00" in value or "\ud800" in value:  # cannot even be a filter
                rejects(engine, lambda f=filters: engine.list(**f), InvalidInput)
            else:
                assert engine.list(**filters).items == []  # type: ignore[arg-type]


HOSTILE_EVENTS = [SQL, "ünïcødé", "😀", " ", "INC ", "inc", "x" * 200]


def test_hostile_event_names_are_unknown_events(engine: Engine) -> None:
    inst = engine.create("counter", context=CTX)
    for event in HOSTILE_EVENTS:
        err = rejects(engine, lambda e=event: engine.send(inst.id, e), UnknownEvent, "allowed here")
        assert err.event == event


def test_malformed_event_names_are_invalid_input(engine: Engine) -> None:
    inst = engine.create("counter", context=CTX)
    for event, message in [
        ("", "non-empty"),
        ("a\x00b", "control characters"),
        ("a\nb", "control characters"),
        ("x" * 10_000, "longer than 200"),
        (None, "non-empty"),
        (42, "non-empty"),
    ]:
        rejects(engine, lambda e=event: engine.send(inst.id, e), InvalidInput, message)


def test_a_machine_with_hostile_names_works_end_to_end(engine: Engine) -> None:
    state_a, state_b = "état 'α'; --", '😀 "done"'
    m = Machine(
        SQL,
        initial=state_a,
        states={
            state_a: State(on={SQL: state_b, "ünï": transition(internal=True)}),
            state_b: State(final=True),
        },
    )
    engine.register(m)
    inst = engine.create(SQL)
    assert engine.allowed_events(inst.id) == [SQL, "ünï"]
    engine.send(inst.id, "ünï")
    done = engine.send(inst.id, SQL)
    assert done.state == state_b
    assert done.status == "final"
    assert [r.event for r in engine.history(inst.id)] == [None, "ünï", SQL]
    assert [i.id for i in engine.list(machine=SQL, state=state_b).items] == [inst.id]
    assert engine.machine(SQL).name == SQL


HOSTILE_PAYLOADS: list[Any] = [
    {SQL: SQL},
    {"'": '"', "\\": "\\\\", "": ""},
    {"ünï😀": ["中文", {"ключ": "значение"}]},
    {"nested": {"deeper": {"deepest": [1, 2.5, True, None, "x"]}}},
    {"big int": 2**62, "neg": -(2**62), "tiny": 1e-300, "zero": 0, "false": False},
    {"$where": "1==1", "__proto__": {"admin": True}, "constructor": "x"},
    {"line\nbreak": "tab\tand\rreturn", "u2028": "\u2028\u2029"},
    ["a", "list", "payload"],
    "just a string",
    12345,
    None,
]


def test_hostile_but_valid_json_payloads_round_trip(engine: Engine) -> None:
    inst = engine.create("counter", context=CTX)
    for payload in HOSTILE_PAYLOADS:
        engine.send(inst.id, "INC", payload)
        assert engine.history(inst.id)[-1].payload == payload, payload
    assert engine.replay(inst.id) == engine.get(inst.id)


BAD_PAYLOADS: list[tuple[Any, str]] = [
    ({"k": "nul\x00value"}, "NUL"),
    ({"nul\x00key": 1}, "NUL"),
    ({"k": "lone \ud800"}, "not JSON-serializable"),
    ({"k": object()}, "not JSON-serializable"),
    ({"k": float("nan")}, "NaN or Infinity"),
    ({"k": float("-inf")}, "NaN or Infinity"),
    ({"k": b"\xff\xfe"}, "not JSON-serializable"),
    ({"blob": "x" * 5000}, "over the 4096-byte limit"),
    ({"blob": "😀" * 2000}, "over the 4096-byte limit"),
    ([{"k": "v" * 100}] * 100, "over the 4096-byte limit"),
]


def test_unstorable_payloads_are_invalid_payload(engine: Engine) -> None:
    inst = engine.create("counter", context=CTX)
    for payload, message in BAD_PAYLOADS:
        err = rejects(
            engine, lambda p=payload: engine.send(inst.id, "INC", p), InvalidPayload, message
        )
        assert err.instance_id == inst.id
        assert err.event == "INC"


def test_a_payload_just_under_the_limit_is_accepted(engine: Engine) -> None:
    inst = engine.create("counter", context=CTX)
    payload = {"blob": "x" * 4000}
    engine.send(inst.id, "INC", payload)
    assert engine.history(inst.id)[-1].payload == payload


def test_an_oversized_model_context_is_invalid_payload(db: dict[str, Any]) -> None:
    with Engine(**db, max_payload_bytes=100) as engine:
        engine.register(sm.order_machine())
        small = engine.create("order-lifecycle", context={"order_id": "A", "total": 1})
        rejects(
            engine,
            lambda: engine.create("order-lifecycle", context={"order_id": "A" * 100, "total": 1}),
            InvalidPayload,
            "over the 100-byte limit",
        )
        assert [i.id for i in engine.list().items] == [small.id]


def test_unstorable_contexts_write_nothing(engine: Engine) -> None:
    for context, message in [
        ({**CTX, "blob": "x" * 5000}, "over the 4096-byte limit"),
        ({**CTX, "bad": "nul\x00"}, "NUL"),
        ({**CTX, "bad": float("inf")}, "NaN or Infinity"),
        ({**CTX, "bad": {1, object()}}, "not JSON-serializable"),
    ]:
        rejects(
            engine, lambda c=context: engine.create("counter", context=c), InvalidPayload, message
        )
    assert engine.list().items == []


def test_hostile_context_values_round_trip(engine: Engine) -> None:
    context = {**CTX, SQL: SQL, "ünï😀": ["\u2028", {"'": '"'}], "big": 2**62}
    inst = engine.create("counter", context=context)
    assert engine.get(inst.id).context == context
    assert engine.send(inst.id, "INC").context == {**context, "n": 1}
    assert engine.replay(inst.id) == engine.get(inst.id)


def test_order_payload_schema_rejects_hostile_values(engine: Engine) -> None:
    order = engine.create("order-lifecycle", context={"order_id": SQL, "total": 10})
    for payload in ({"amount": SQL}, {"amount": "1e999999"}, {"amount": None}, {SQL: 1}):
        rejects(
            engine,
            lambda payload=payload: engine.send(order.id, "PAYMENT_RECEIVED", payload),
            InvalidPayload,
        )
    assert engine.get(order.id).context["order_id"] == SQL
    assert isinstance(statewf.InvalidPayload("x"), statewf.EventRejected)
