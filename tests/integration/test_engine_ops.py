"""Every Engine operation, on a real SQLite file and a real Postgres schema (``db``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sample_machines as sm
import sqlalchemy as sa
from db_snapshot import dump_tables, frozen
from pydantic import BaseModel

import statewf
from statewf import (
    ActionFailed,
    DuplicateInstance,
    Engine,
    GuardRejected,
    InstanceFinished,
    InstanceNotFound,
    InvalidInput,
    InvalidPayload,
    Machine,
    MachineNotRegistered,
    MachineVersionConflict,
    State,
    StatewfError,
    UnknownEvent,
    transition,
)
from statewf.testing import ManualClock
from tests.conftest import PG_URL

ORDER = {"order_id": "A1", "total": 100}


def explode(ctx: Any, ev: Any) -> None:
    raise RuntimeError("action exploded")


def fragile_machine() -> Machine:
    return Machine(
        "fragile",
        initial="a",
        states={"a": State(on={"BOOM": transition("b", action=explode)}), "b": State()},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(db: dict[str, Any], clock: ManualClock) -> Iterator[Engine]:
    sm.EFFECT_CALLS.clear()
    eng = Engine(**db, clock=clock)
    eng.register(sm.order_machine(), sm.counter_machine(), fragile_machine())
    yield eng
    eng.close()


def new_order(engine: Engine, **kw: Any) -> statewf.Instance:
    return engine.create("order-lifecycle", context=ORDER, **kw)


# ------------------------------------------------------------------ create


def test_create_starts_in_the_initial_state(engine: Engine, clock: ManualClock) -> None:
    order = new_order(engine)
    assert order.state == "pending"
    assert order.status == "active"
    assert order.version == 1
    assert order.machine == "order-lifecycle"
    assert order.machine_version == "1"
    assert order.created_at == clock.now()
    assert order.context == {"order_id": "A1", "total": 100.0, "paid_at": None, "notes": []}
    assert engine.get(order.id) == order
    assert len(order.id) == 32


def test_create_accepts_a_machine_object_and_a_context_model(engine: Engine) -> None:
    inst = engine.create(sm.order_machine(), context=sm.Order(order_id="Z", total=3))
    assert engine.get(inst.id).context["order_id"] == "Z"


def test_create_validates_the_context_and_writes_nothing(engine: Engine) -> None:
    before = dump_tables(engine)
    with pytest.raises(InvalidInput, match="not a valid Order"):
        engine.create("order-lifecycle", context={"order_id": "A1", "total": "lots"})
    with pytest.raises(MachineNotRegistered, match=r"call engine\.register"):
        engine.create("nope")
    assert dump_tables(engine) == before


def test_caller_chosen_id_and_duplicate_instance(engine: Engine) -> None:
    first = new_order(engine, id="order-42")
    assert first.id == "order-42"
    before = dump_tables(engine)
    with pytest.raises(DuplicateInstance, match="'order-42' already exists") as exc:
        engine.create("counter", id="order-42", context={"n": 0, "moves": 0})
    assert exc.value.instance_id == "order-42"
    assert dump_tables(engine) == before
    assert engine.get("order-42") == first


def test_idempotency_key_returns_the_same_instance(engine: Engine) -> None:
    first = new_order(engine, idempotency_key="req-1")
    engine.send(first.id, "CANCEL")
    again = engine.create(
        "order-lifecycle", context={"order_id": "other", "total": 5}, idempotency_key="req-1"
    )
    assert again.id == first.id
    assert again.context["order_id"] == "A1"
    assert again.state == "cancelled"  # the existing instance, as it is now
    assert len(engine.list(machine="order-lifecycle").items) == 1
    # keys are per machine
    other = engine.create("counter", context={"n": 0, "moves": 0}, idempotency_key="req-1")
    assert other.id != first.id


def test_idempotency_key_used_by_another_resource_is_rejected(engine: Engine) -> None:
    new_order(engine, idempotency_key="k", resource_id="tenant-a")
    with pytest.raises(InvalidInput, match="already used by another resource"):
        new_order(engine, idempotency_key="k", resource_id="tenant-b")
    assert new_order(engine, idempotency_key="k", resource_id="tenant-a").resource_id == "tenant-a"


def test_resource_id_scopes_every_read_and_write(engine: Engine) -> None:
    order = new_order(engine, resource_id="tenant-a")
    assert engine.get(order.id, resource_id="tenant-a") == order
    before = frozen(engine, order.id)
    calls: list[Callable[[], Any]] = [
        lambda: engine.get(order.id, resource_id="tenant-b"),
        lambda: engine.send(order.id, "CANCEL", resource_id="tenant-b"),
        lambda: engine.history(order.id, resource_id="tenant-b"),
        lambda: engine.allowed_events(order.id, resource_id="tenant-b"),
        lambda: engine.state_at(order.id, 1, resource_id="tenant-b"),
        lambda: engine.replay(order.id, resource_id="tenant-b"),
    ]
    for call in calls:
        with pytest.raises(InstanceNotFound, match="for resource 'tenant-b'"):
            call()
    assert frozen(engine, order.id) == before
    sent = engine.send(order.id, "CANCEL", resource_id="tenant-a")
    assert sent.state == "cancelled"
    assert sent.resource_id == "tenant-a"


# ------------------------------------------------------------------ send


def test_send_applies_an_event_in_one_step(engine: Engine, clock: ManualClock) -> None:
    order = new_order(engine)
    clock.advance(5)
    sent = engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    assert sent.state == "processing"
    assert sent.version == 2
    assert sent.context["paid_at"] == "paid"
    assert sent.updated_at == clock.now()
    assert sent.created_at == order.created_at
    assert engine.get(order.id) == sent
    assert engine.send(order.id, "SHIPPED").state == "shipped"


def test_send_takes_a_payload_model(engine: Engine) -> None:
    order = new_order(engine)
    assert engine.send(order.id, "PAYMENT_RECEIVED", sm.Payment(amount=101)).state == "processing"
    assert engine.history(order.id)[-1].payload == {"amount": 101.0}


REJECTIONS: list[tuple[str, str, Any, type[StatewfError]]] = [
    ("unknown event", "SHIPPED", None, UnknownEvent),
    ("event of no machine", "NOT_AN_EVENT", None, UnknownEvent),
    ("guard false", "PAYMENT_RECEIVED", {"amount": 1}, GuardRejected),
    ("invalid payload", "PAYMENT_RECEIVED", {"amount": "x"}, InvalidPayload),
    ("missing payload", "PAYMENT_RECEIVED", None, InvalidPayload),
    ("oversized payload", "CANCEL", {"blob": "x" * 5000}, InvalidPayload),
    ("non-JSON payload", "CANCEL", {"when": object()}, InvalidPayload),
    ("empty event name", "", None, InvalidInput),
    ("control characters", "CAN\nCEL", None, InvalidInput),
]


@pytest.mark.parametrize(
    ("event", "payload", "error"),
    [r[1:] for r in REJECTIONS],
    ids=[r[0] for r in REJECTIONS],
)
def test_rejected_events_change_nothing(
    db: dict[str, Any], event: str, payload: Any, error: type[StatewfError]
) -> None:
    with Engine(**db, max_payload_bytes=1000) as engine:
        engine.register(sm.order_machine())
        order = new_order(engine)
        before = frozen(engine, order.id)
        tables = dump_tables(engine)
        with pytest.raises(error) as exc:
            engine.send(order.id, event, payload)
        assert frozen(engine, order.id) == before
        assert dump_tables(engine) == tables
        if isinstance(exc.value, statewf.EventRejected):
            assert exc.value.instance_id == order.id
            assert exc.value.event == event
            assert exc.value.state == "pending"
            assert order.id in str(exc.value)


def test_action_failed_and_final_states_change_nothing(engine: Engine) -> None:
    fragile = engine.create("fragile")
    tables = dump_tables(engine)
    with pytest.raises(ActionFailed, match="'explode' raised RuntimeError") as exc:
        engine.send(fragile.id, "BOOM")
    assert isinstance(exc.value.__cause__, RuntimeError)
    assert dump_tables(engine) == tables
    done = new_order(engine)
    engine.send(done.id, "CANCEL")
    tables = dump_tables(engine)
    for event in ("CANCEL", "PAYMENT_RECEIVED", "WHATEVER"):
        with pytest.raises(InstanceFinished, match="final"):
            engine.send(done.id, event)
    assert dump_tables(engine) == tables


def test_unknown_instance_is_instance_not_found(engine: Engine) -> None:
    tables = dump_tables(engine)
    for call in (
        lambda: engine.send("ghost", "CANCEL"),
        lambda: engine.get("ghost"),
        lambda: engine.history("ghost"),
        lambda: engine.allowed_events("ghost"),
        lambda: engine.state_at("ghost", 1),
    ):
        with pytest.raises(InstanceNotFound, match="no instance 'ghost'"):
            call()
    assert dump_tables(engine) == tables


# ------------------------------------------------------------------ reads


def test_history_is_numbered_from_one(engine: Engine, clock: ManualClock) -> None:
    order = new_order(engine)
    for event, payload in [
        ("PAYMENT_RECEIVED", {"amount": 150}),
        ("OUT_OF_STOCK", None),
        ("RESTOCKED", None),
        ("SHIPPED", None),
    ]:
        clock.advance(1)
        engine.send(order.id, event, payload)
    log = engine.history(order.id)
    assert [r.seq for r in log] == [1, 2, 3, 4, 5]
    assert [r.kind for r in log] == ["create", "event", "event", "event", "event"]
    assert [r.event for r in log] == [
        None,
        "PAYMENT_RECEIVED",
        "OUT_OF_STOCK",
        "RESTOCKED",
        "SHIPPED",
    ]
    assert [r.target for r in log] == [
        ("pending",),
        ("processing",),
        ("backorder",),
        ("processing",),
        ("shipped",),
    ]
    assert log[2].source == ("processing",)
    assert log[1].payload == {"amount": 150.0}
    assert log[1].context_set == {"paid_at": "paid"}
    assert all(r.instance_id == order.id for r in log)
    assert [r.created_at for r in log] == sorted(r.created_at for r in log)


def test_allowed_events_follow_the_state(engine: Engine) -> None:
    order = new_order(engine)
    assert engine.allowed_events(order.id) == ["PAYMENT_RECEIVED", "CANCEL"]
    engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    assert engine.allowed_events(order.id) == ["SHIPPED", "OUT_OF_STOCK"]
    engine.send(order.id, "SHIPPED")
    engine.send(order.id, "DELIVERED")
    engine.send(order.id, "CONFIRMED")
    assert engine.get(order.id).status == "final"
    assert engine.allowed_events(order.id) == []


def test_state_at_travels_in_time(engine: Engine, clock: ManualClock) -> None:
    order = new_order(engine)
    clock.advance(10)
    engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    clock.advance(10)
    engine.send(order.id, "SHIPPED")
    first = engine.state_at(order.id, 1)
    assert first == order
    second = engine.state_at(order.id, 2)
    assert second.state == "processing"
    assert second.context["paid_at"] == "paid"
    assert second.version == 2
    assert second.updated_at == order.created_at + timedelta(seconds=10)
    assert engine.state_at(order.id, 3) == engine.get(order.id)
    before = frozen(engine, order.id)
    for bad in (0, -1, 4, "1", 1.0, True, None):
        with pytest.raises(InvalidInput, match="seq must be between 1 and 3"):
            engine.state_at(order.id, bad)  # type: ignore[arg-type]
    assert frozen(engine, order.id) == before


def test_replay_equals_get(engine: Engine) -> None:
    order = new_order(engine)
    engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    engine.send(order.id, "OUT_OF_STOCK")
    counter = engine.create("counter", context={"n": 0, "moves": 0})
    for event in ("INC", "FLIP", "INC", "INC", "FLIP"):
        engine.send(counter.id, event)
    for inst in (order, counter):
        assert engine.replay(inst.id) == engine.get(inst.id)
    assert engine.get(counter.id).context == {"n": 3, "moves": 2}


def test_list_filters(engine: Engine) -> None:
    a = new_order(engine, resource_id="tenant-a")
    b = new_order(engine, resource_id="tenant-b")
    engine.send(b.id, "CANCEL", resource_id="tenant-b")
    c = engine.create("counter", context={"n": 0, "moves": 0}, resource_id="tenant-a")

    def ids(**filters: Any) -> list[str]:
        return [i.id for i in engine.list(**filters).items]

    assert set(ids()) == {a.id, b.id, c.id}
    assert set(ids(machine="order-lifecycle")) == {a.id, b.id}
    assert ids(machine="counter") == [c.id]
    assert ids(state="cancelled") == [b.id]
    assert ids(state="pending") == [a.id]
    assert ids(status="final") == [b.id]
    assert set(ids(status=["active", "final"])) == {a.id, b.id, c.id}
    assert set(ids(resource_id="tenant-a")) == {a.id, c.id}
    assert ids(resource_id="tenant-a", machine="order-lifecycle") == [a.id]
    assert ids(machine="nope") == []
    assert ids(kind="machine", machine="counter") == [c.id]


@pytest.mark.parametrize("tick", [0, 1], ids=["same-timestamp", "distinct-timestamps"])
def test_list_paginates_with_a_cursor(engine: Engine, clock: ManualClock, tick: int) -> None:
    created = []
    for _ in range(7):
        created.append(engine.create("counter", context={"n": 0, "moves": 0}).id)
        clock.advance(tick)
    new_order(engine)  # filtered out below
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = engine.list(machine="counter", limit=3, cursor=cursor)
        pages += 1
        seen += [i.id for i in page.items]
        assert len(page.items) <= 3
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))
    if tick:
        assert seen == created  # oldest first
    exact = engine.list(machine="counter", limit=7)
    assert len(exact.items) == 7
    assert exact.next_cursor is None


def test_list_rejects_bad_cursors_and_limits(engine: Engine) -> None:
    for cursor in ("garbage", "!!!", "W10=", "bm90IGpzb24="):
        with pytest.raises(InvalidInput, match=r"cursor .* is not valid"):
            engine.list(cursor=cursor)
    for limit in (0, -5, 100_000):
        with pytest.raises(InvalidInput, match="limit must be between"):
            engine.list(limit=limit)


# ------------------------------------------------------------------ machine versions


class Flag(BaseModel):
    on: bool = False


def versioned(version: str, *, extra_event: bool) -> Machine:
    on: dict[str, Any] = {"GO": "b"}
    if extra_event:
        on["HOLD"] = "a"
    return Machine(
        "versioned",
        version=version,
        initial="a",
        context=Flag,
        states={"a": State(on=on), "b": State(on={"BACK": "a"})},
    )


def test_a_changed_machine_needs_a_new_version(engine: Engine) -> None:
    engine.register(versioned("1", extra_event=False))
    engine.register(versioned("1", extra_event=False))  # the same definition again is fine
    with pytest.raises(MachineVersionConflict, match="give the changed machine a new version="):
        engine.register(versioned("1", extra_event=True))
    assert "HOLD" not in engine.machine("versioned").events


def test_version_conflicts_are_seen_across_engines(db: dict[str, Any]) -> None:
    with Engine(**db) as first:
        first.register(versioned("1", extra_event=False))
    with Engine(**db) as second:
        with pytest.raises(MachineVersionConflict, match="stored fingerprint"):
            second.register(versioned("1", extra_event=True))
        second.register(versioned("1", extra_event=False))
        assert [d["version"] for d in second.stored_definitions()] == ["1"]


def test_old_instances_keep_their_version(engine: Engine) -> None:
    engine.register(versioned("1", extra_event=False))
    old = engine.create("versioned")
    engine.register(versioned("2", extra_event=True))
    new = engine.create("versioned")
    assert (old.machine_version, new.machine_version) == ("1", "2")
    assert engine.allowed_events(old.id) == ["GO"]
    assert engine.allowed_events(new.id) == ["GO", "HOLD"]
    with pytest.raises(UnknownEvent):
        engine.send(old.id, "HOLD")
    assert engine.send(new.id, "HOLD").version == 2
    assert engine.send(old.id, "GO").machine_version == "1"
    pinned = engine.create("versioned", version="1")
    assert pinned.machine_version == "1"
    with pytest.raises(MachineNotRegistered):
        engine.create("versioned", version="3")


def test_an_instance_of_an_unregistered_version_is_refused(db: dict[str, Any]) -> None:
    with Engine(**db) as first:
        first.register(versioned("1", extra_event=False))
        old = first.create("versioned")
    with Engine(**db) as second:
        second.register(versioned("2", extra_event=True))
        before = frozen(second, old.id)
        with pytest.raises(MachineNotRegistered, match="register that version too") as exc:
            second.send(old.id, "GO")
        assert exc.value.instance_id == old.id
        with pytest.raises(MachineNotRegistered):
            second.allowed_events(old.id)
        assert frozen(second, old.id) == before
        assert second.get(old.id).version == 1  # reads still work


# ------------------------------------------------------------------ effects outbox


def test_effects_run_after_commit_with_a_stable_key(engine: Engine) -> None:
    order = new_order(engine)
    assert sm.EFFECT_CALLS == []
    engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    (call,) = sm.EFFECT_CALLS
    assert call.name == "notify_warehouse"
    assert call.instance_id == order.id
    assert call.seq == 2
    assert call.idempotency_key == f"{order.id}:2:0"
    assert call.state == "processing"
    assert call.event == "PAYMENT_RECEIVED"
    assert call.context["paid_at"] == "paid"  # the committed context
    assert call.payload == {"amount": 100.0}
    assert call.attempt == 1
    (row,) = engine.effects(instance_id=order.id)
    assert (row.status, row.attempts, row.seq, row.position) == ("done", 1, 2, 0)
    assert row.done_at is not None
    assert engine.dispatch_effects() == 0  # done effects never run again
    # reading, time travel and replay restore snapshots: they never run hooks again
    engine.get(order.id)
    engine.history(order.id)
    engine.state_at(order.id, 2)
    engine.replay(order.id)
    engine.list()
    assert len(sm.EFFECT_CALLS) == 1
    assert len(engine.effects()) == 1


FAILURES: dict[str, int] = {}


def flaky(call: statewf.EffectCall) -> None:
    FAILURES[call.idempotency_key] = FAILURES.get(call.idempotency_key, 0) + 1
    if FAILURES[call.idempotency_key] <= FAILURES.get("fail_times", 0):
        raise ConnectionError(f"remote down (attempt {call.attempt})")


def flaky_machine() -> Machine:
    return Machine(
        "flaky",
        initial="a",
        states={"a": State(on={"GO": transition("b", action=statewf.effect(flaky))}), "b": State()},
    )


@pytest.fixture
def flaky_engine(db: dict[str, Any], clock: ManualClock) -> Iterator[Engine]:
    FAILURES.clear()
    with Engine(**db, clock=clock, effect_max_attempts=3) as eng:
        eng.register(flaky_machine())
        yield eng


def test_a_failing_effect_stays_pending_and_is_retried(
    flaky_engine: Engine, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    FAILURES["fail_times"] = 1
    inst = flaky_engine.create("flaky")
    sent = flaky_engine.send(inst.id, "GO")  # the event is accepted although its effect failed
    assert sent.state == "b"
    (row,) = flaky_engine.effects(instance_id=inst.id)
    assert row.status == "pending"
    assert row.attempts == 1
    assert row.last_error == "ConnectionError: remote down (attempt 1)"
    assert "remote down" in caplog.text
    assert flaky_engine.dispatch_effects() == 0  # not due yet: backing off
    clock.advance(60)
    assert flaky_engine.dispatch_effects() == 1
    (row,) = flaky_engine.effects(instance_id=inst.id)
    assert (row.status, row.attempts, row.last_error) == ("done", 2, None)
    assert FAILURES[f"{inst.id}:2:0"] == 2  # same idempotency key on the retry
    assert flaky_engine.effects(status="pending") == []


def test_an_effect_that_keeps_failing_goes_dead(flaky_engine: Engine, clock: ManualClock) -> None:
    FAILURES["fail_times"] = 99
    inst = flaky_engine.create("flaky")
    flaky_engine.send(inst.id, "GO")
    for _ in range(5):
        clock.advance(3600)
        flaky_engine.dispatch_effects()
    (row,) = flaky_engine.effects(instance_id=inst.id)
    assert row.status == "dead"
    assert row.attempts == 3
    assert "remote down (attempt 3)" in (row.last_error or "")
    assert FAILURES[f"{inst.id}:2:0"] == 3
    assert [e.id for e in flaky_engine.effects(status="dead")] == [row.id]


def test_dispatch_effects_false_leaves_them_in_the_outbox(
    db: dict[str, Any], clock: ManualClock
) -> None:
    sm.EFFECT_CALLS.clear()
    with Engine(**db, clock=clock, dispatch_effects=False) as engine:
        engine.register(sm.order_machine())
        order = new_order(engine)
        engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
        engine.send(order.id, "SHIPPED")
        assert sm.EFFECT_CALLS == []
        pending = engine.effects(status="pending")
        assert [(e.name, e.seq, e.attempts) for e in pending] == [
            ("notify_warehouse", 2, 0),
            ("send_shipping_notification", 3, 0),
        ]
        assert engine.dispatch_effects(limit=1) == 1
        assert engine.dispatch_effects() == 1
        assert [c.idempotency_key for c in sm.EFFECT_CALLS] == [
            f"{order.id}:2:0",
            f"{order.id}:3:0",
        ]
        assert engine.effects(status="pending") == []


# ------------------------------------------------------------------ async twins


def test_async_twins(engine: Engine) -> None:
    async def scenario() -> tuple[Any, ...]:
        inst = await engine.create_async("counter", context={"n": 0, "moves": 0}, id="async-1")
        await asyncio.gather(*(engine.send_async(inst.id, "INC") for _ in range(5)))
        await engine.send_async(inst.id, "FLIP")
        return (
            await engine.get_async(inst.id),
            await engine.history_async(inst.id),
            await engine.allowed_events_async(inst.id),
            await engine.state_at_async(inst.id, 1),
            await engine.list_async(machine="counter"),
        )

    snap, log, allowed, first, page = asyncio.run(scenario())
    assert snap.context == {"n": 5, "moves": 1}
    assert snap.state == "busy"
    assert [r.seq for r in log] == list(range(1, 8))
    assert allowed == ["INC", "FLIP"]
    assert first.version == 1
    assert [i.id for i in page.items] == ["async-1"]

    async def rejected() -> None:
        await engine.send_async("async-1", "NOPE")

    with pytest.raises(UnknownEvent):
        asyncio.run(rejected())


# ------------------------------------------------------------------ isolation


def test_table_prefixes_isolate_engines(db: dict[str, Any]) -> None:
    with Engine(**db, table_prefix="alpha_") as alpha, Engine(**db, table_prefix="beta_") as beta:
        alpha.register(sm.counter_machine())
        beta.register(sm.counter_machine())
        a = alpha.create("counter", id="same-id", context={"n": 0, "moves": 0})
        b = beta.create("counter", id="same-id", context={"n": 100, "moves": 0})
        alpha.send(a.id, "INC")
        assert alpha.get("same-id").context["n"] == 1
        assert beta.get("same-id").context["n"] == 100
        assert len(alpha.history("same-id")) == 2
        assert len(beta.history("same-id")) == 1
        alpha.create("counter", context={"n": 0, "moves": 0})
        assert len(alpha.list().items) == 2
        assert [i.id for i in beta.list().items] == [b.id]
        assert alpha.store.tables.instances.name == "alpha_instances"


def test_postgres_schemas_isolate_engines(pg_schema: str) -> None:
    other = pg_schema + "_b"
    try:
        with Engine(PG_URL, schema=pg_schema) as one, Engine(PG_URL, schema=other) as two:
            one.register(sm.counter_machine())
            two.register(sm.counter_machine())
            one.create("counter", id="x", context={"n": 1, "moves": 0})
            assert two.list().items == []
            with pytest.raises(InstanceNotFound):
                two.get("x")
            two.create("counter", id="x", context={"n": 2, "moves": 0})
            assert one.get("x").context["n"] == 1
    finally:
        eng = sa.create_engine(PG_URL)
        with eng.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{other}" CASCADE'))
        eng.dispose()


def test_schema_on_sqlite_is_invalid_input(sqlite_url: str) -> None:
    with pytest.raises(InvalidInput, match="schema= is for PostgreSQL"):
        Engine(sqlite_url, schema="x")
    with pytest.raises(InvalidInput, match="cannot use database URL"):
        Engine("nosuchdriver://x/y")


# ------------------------------------------------------------------ several engines, one database


def test_two_engines_on_one_database_see_each_others_writes(db: dict[str, Any]) -> None:
    with Engine(**db) as a, Engine(**db) as b:
        a.register(sm.order_machine(), sm.counter_machine())
        b.register(sm.order_machine(), sm.counter_machine())
        order = new_order(a)
        assert a.allowed_events(order.id) == ["PAYMENT_RECEIVED", "CANCEL"]
        b.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
        # a must not decide from what it saw before b's write
        assert a.get(order.id).state == "processing"
        assert a.send(order.id, "SHIPPED").state == "shipped"
        with pytest.raises(UnknownEvent):
            b.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
        counter = a.create("counter", context={"n": 0, "moves": 0})
        for _ in range(3):
            a.send(counter.id, "INC")
            b.send(counter.id, "INC")
        assert a.get(counter.id).context["n"] == 6
        assert b.send(counter.id, "FLIP").version == 8
        assert a.send(counter.id, "INC").context == {"n": 7, "moves": 1}
        assert [r.seq for r in b.history(counter.id)] == list(range(1, 10))
        assert a.replay(counter.id) == b.get(counter.id)
        b.send(order.id, "DELIVERED")
        b.send(order.id, "CONFIRMED")
        with pytest.raises(InstanceFinished):
            a.send(order.id, "RETURN_REQUESTED")


COMMITTED: list[int] = []
ENGINES: list[Engine] = []


def look_back(call: statewf.EffectCall) -> None:
    """Effect that reads the instance back through the engine, as an outside system would."""
    COMMITTED.append(ENGINES[0].get(call.instance_id).version)


def test_effects_see_the_committed_transition(db: dict[str, Any]) -> None:
    COMMITTED.clear()
    machine = Machine(
        "looker",
        initial="a",
        states={
            "a": State(on={"GO": transition("b", action=statewf.effect(look_back))}),
            "b": State(),
        },
    )
    with Engine(**db) as engine:
        ENGINES[:] = [engine]
        engine.register(machine)
        inst = engine.create("looker")
        engine.send(inst.id, "GO")
        assert COMMITTED == [2]


def test_engine_url_comes_from_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "from-env.db"
    monkeypatch.setenv("STATEWF_DATABASE_URL", f"sqlite:///{path}")
    with Engine() as engine:
        engine.register(sm.counter_machine())
        engine.create("counter", id="env", context={"n": 0, "moves": 0})
    assert path.exists()
    with Engine(f"sqlite:///{path}") as again:
        again.register(sm.counter_machine())
        assert again.get("env").version == 1


def test_a_failed_transition_records_and_runs_no_effects(db: dict[str, Any]) -> None:
    calls: list[Any] = []
    machine = Machine(
        "half-way",
        initial="a",
        states={
            # the exit effect is recorded first, then entering b raises
            "a": State(on_exit=statewf.effect(calls.append, name="told_world"), on={"GO": "b"}),
            "b": State(on_enter=explode),
        },
    )
    with Engine(**db) as engine:
        engine.register(machine)
        inst = engine.create("half-way")
        tables = dump_tables(engine)
        with pytest.raises(ActionFailed, match="'explode' raised"):
            engine.send(inst.id, "GO")
        assert dump_tables(engine) == tables
        assert engine.effects() == []
        assert engine.dispatch_effects() == 0
        assert calls == []
