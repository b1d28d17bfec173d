"""Stateful property test: random valid and invalid events on random instances, real stores.

Invariants after every step, for every instance: folding its log gives exactly the
snapshot; the snapshot's version is the log length; the log is numbered 1..n. A
rejected event leaves the log and the snapshot byte-identical.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar

import pydantic_core
import sample_machines as sm
from db_snapshot import frozen
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from statewf import Engine, EventRejected, InvalidInput, StatewfError
from statewf.fold import fold
from statewf.testing import ManualClock

EVENTS = [*sm.ORDER_EVENTS, "INC", "FLIP", "NOPE", "inc", "'; DROP TABLE x; --", "ünï😀"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
payloads = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"amount": st.one_of(st.integers(0, 300), st.floats(0, 300), json_values)}
    ),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    json_values,
    st.just({"blob": "x" * 3000}),  # over the engine's 2000-byte limit
)
contexts = st.one_of(
    st.fixed_dictionaries({"order_id": st.text(max_size=8), "total": st.integers(0, 200)}),
    st.fixed_dictionaries({"order_id": json_values, "total": json_values}),  # mostly invalid
)


OUTCOMES: dict[str, int] = {}


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, else ``bad``."""
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else good)


class LogMachine(RuleBasedStateMachine):
    """Drives one engine; ``engine`` is set by the test that runs it."""

    engine: ClassVar[Engine]
    instances = Bundle("instances")

    def __init__(self) -> None:
        super().__init__()
        self.run_id = uuid.uuid4().hex
        self.ids: list[str] = []
        self.dirty: set[str] = set()

    @rule(target=instances, context=contexts, key=st.sampled_from([None, "k1", "k2"]))
    def create_order(self, context: dict[str, Any], key: str | None) -> str:
        key = None if key is None else f"{key}-{self.run_id}"
        try:
            inst = self.engine.create("order-lifecycle", context=context, idempotency_key=key)
        except StatewfError:  # an invalid or unstorable context
            inst = self.engine.create("order-lifecycle", context={"order_id": "x", "total": 1})
        if inst.id not in self.ids:
            self.ids.append(inst.id)
        self.dirty.add(inst.id)
        return inst.id

    @rule(target=instances, n=st.integers(-5, 5))
    def create_counter(self, n: int) -> str:
        inst = self.engine.create("counter", context={"n": n, "moves": 0}, id=uuid.uuid4().hex)
        self.ids.append(inst.id)
        self.dirty.add(inst.id)
        return inst.id

    @rule(instance=instances, data=st.data())
    def send(self, instance: str, data: st.DataObject) -> None:
        allowed = self.engine.allowed_events(instance)
        event = data.draw(
            mostly(st.sampled_from(allowed), st.sampled_from(EVENTS))
            if allowed
            else st.sampled_from(EVENTS),
            label="event",
        )
        good = (
            st.fixed_dictionaries({"amount": st.integers(0, 300)})
            if event == "PAYMENT_RECEIVED"
            else st.none()
        )
        payload = data.draw(mostly(good, payloads), label="payload")
        clock = self.engine.clock
        assert isinstance(clock, ManualClock)
        clock.advance(1)
        before = frozen(self.engine, instance)
        version = json.loads(before[0])["version"]
        try:
            after = self.engine.send(instance, event, payload)
        except (EventRejected, InvalidInput) as exc:
            assert frozen(self.engine, instance) == before
            OUTCOMES[type(exc).__name__] = OUTCOMES.get(type(exc).__name__, 0) + 1
            return
        OUTCOMES["accepted"] = OUTCOMES.get("accepted", 0) + 1
        self.dirty.add(instance)
        assert after == self.engine.get(instance)
        assert after.version == version + 1
        last = self.engine.history(instance)[-1]
        assert last.event == event
        if event in ("INC", "FLIP"):  # no payload schema: stored as sent, as JSON
            # exact on both stores: documents are JSON text (json on PostgreSQL)
            sent = pydantic_core.from_json(pydantic_core.to_json(payload))
            assert json.dumps(last.payload, sort_keys=True) == json.dumps(sent, sort_keys=True)

    @invariant()
    def fold_of_the_log_is_the_snapshot(self) -> None:
        # Instances not touched since the last check cannot have changed: a rejected
        # event is checked byte-for-byte in ``send``.
        dirty, self.dirty = self.dirty, set()
        for instance in dirty:
            log = self.engine.history(instance)
            snapshot = self.engine.get(instance)
            assert [r.seq for r in log] == list(range(1, len(log) + 1))
            assert snapshot.version == len(log)
            assert fold(log).model_dump_json() == snapshot.model_dump_json()
            assert self.engine.state_at(instance, len(log)) == snapshot


SETTINGS = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_fold_equals_snapshot_and_rejections_change_nothing(db: dict[str, Any]) -> None:
    with Engine(**db, clock=ManualClock(), max_payload_bytes=2000) as engine:
        engine.register(sm.order_machine(), sm.counter_machine())
        LogMachine.engine = engine
        OUTCOMES.clear()
        OUTCOMES["accepted"] = 0
        run_state_machine_as_test(LogMachine, settings=SETTINGS)
        assert OUTCOMES["accepted"] > 0
        assert sum(OUTCOMES.values()) > OUTCOMES["accepted"]


def test_payload_json_round_trip_is_exact(db: dict[str, Any]) -> None:
    """Every JSON value the engine accepts comes back from the store unchanged."""
    from hypothesis import given

    with Engine(**db, max_payload_bytes=100_000) as engine:
        engine.register(sm.counter_machine())
        inst = engine.create("counter", context={"n": 0, "moves": 0})

        @settings(max_examples=40, deadline=None)
        @given(json_values)
        def check(value: Any) -> None:
            try:
                engine.send(inst.id, "INC", {"v": value})
            except StatewfError:
                assert (
                    "NaN" in json.dumps(value)
                    or "Infinity" in json.dumps(value)
                    or ("\\u0000" in json.dumps(value))
                )
                return
            stored = engine.history(inst.id)[-1].payload["v"]
            assert json.dumps(stored) == json.dumps(value)  # key order and number types kept

        check()
