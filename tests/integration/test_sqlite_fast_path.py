"""SQLite's send fast path (statewf/store/sqlite_fast.py) writes exactly the rows the locked
path writes, and keeps SQLite's guarantees: the write lock, errors as StoreError, stale
snapshots costing a retry, never a wrong write, and the in-memory database."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import statewf
import tests.sample_machines as sm
from examples.order_statechart import order as order_chart
from statewf.store.schema import UTCDateTime
from statewf.store.sqlite_fast import _short_json, _utc_text
from statewf.testing import ManualClock
from tests.conftest import tracked
from tests.integration.timer_machines import expiring

TABLES = ("instances", "transitions", "effects")


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of statewf's tables, as SQLite holds them (text, not decoded)."""
    conn = sqlite3.connect(path)
    try:
        return {
            name: conn.execute(f"SELECT * FROM statewf_{name} ORDER BY 1, 2, 3").fetchall()
            for name in TABLES
        }
    finally:
        conn.close()


def drive(engine: statewf.Engine, clock: ManualClock) -> None:
    """The same story on either engine: payloads, contexts, effects, timers, a statechart."""
    engine.register(sm.order_machine(), sm.counter_machine(), expiring, order_chart)
    order = engine.create(
        "order-lifecycle", id="o1", context={"order_id": "Ö-1 ✓", "total": 10.0, "notes": ["é"]}
    )
    for event, payload in [
        ("PAYMENT_RECEIVED", {"amount": 10.5}),
        ("OUT_OF_STOCK", None),
        ("RESTOCKED", None),  # records notify_warehouse in the outbox
        ("SHIPPED", None),
    ]:
        clock.advance(timedelta(milliseconds=1))
        engine.send(order.id, event, payload)
    counter = engine.create("counter", id="c1", context={"n": 0, "moves": 0})
    for i in range(6):
        clock.advance(timedelta(microseconds=7))
        payload = {"i": i, "x": [1.0, True, None, "\u2028"]}
        engine.send(counter.id, "INC" if i % 3 else "FLIP", payload)
    waiting = engine.create("expiring", id="e1")
    engine.send(waiting.id, "POKE")
    chart = engine.create("order", id="ch1", context={"order_id": "A"})
    for event in ("CONFIRM", "PAID", "HOLD", "RELEASE"):
        engine.send(chart.id, event)
    with pytest.raises(statewf.UnknownEvent):
        engine.send(order.id, "NOPE")


def test_the_fast_path_writes_the_rows_the_locked_path_writes(tmp_path: Path) -> None:
    sm.EFFECT_CALLS.clear()
    fast_clock, locked_clock = ManualClock(), ManualClock()
    fast = tracked(statewf.Engine(f"sqlite:///{tmp_path / 'fast.db'}", clock=fast_clock))
    # an application's own engine gets no fast path: every send takes the locked path
    app_engine = sa.create_engine(f"sqlite:///{tmp_path / 'locked.db'}")
    locked = tracked(statewf.Engine(app_engine, clock=locked_clock))
    assert fast.store.conditional_writes
    assert not locked.store.conditional_writes
    drive(fast, fast_clock)
    drive(locked, locked_clock)
    fast.close()
    locked.close()
    app_engine.dispose()
    written, expected = rows(tmp_path / "fast.db"), rows(tmp_path / "locked.db")
    for name in TABLES:
        assert written[name] == expected[name], name
    assert len(written["transitions"]) == 19
    assert len(written["effects"]) == 3


def test_values_read_back_equal_the_snapshots_sent(sqlite_url: str) -> None:
    engine = tracked(statewf.Engine(sqlite_url))
    engine.register(sm.counter_machine())
    inst = engine.create("counter", context={"n": 0, "moves": 0, "deep": {"a": [1, 2.5, "ü"]}})
    for i in range(5):
        inst = engine.send(inst.id, "INC", {"i": i})
    engine._snapshots.drop(inst.id)  # the next send reads the row back through the fast path
    again = engine.send(inst.id, "FLIP")
    assert again.version == inst.version + 1
    assert engine.get(again.id) == again
    assert engine.store.read_instance(again.id) == again
    assert engine.replay(again.id) == again
    assert engine.store.read_instance("nobody") is None


def test_a_stale_cached_snapshot_costs_a_retry_not_a_wrong_write(sqlite_url: str) -> None:
    one, two = tracked(statewf.Engine(sqlite_url)), tracked(statewf.Engine(sqlite_url))
    for engine in (one, two):
        engine.register(sm.counter_machine())
    inst = one.create("counter", context={"n": 0, "moves": 0})
    one.send(inst.id, "INC")  # one caches version 2
    two.send(inst.id, "INC")
    two.send(inst.id, "FLIP")  # version 4: one's cached snapshot is stale
    moved = one.send(inst.id, "INC")
    assert moved.version == 5
    assert moved.context == {"n": 3, "moves": 1}
    assert [r.seq for r in one.history(inst.id)] == [1, 2, 3, 4, 5]
    assert one.get(inst.id) == two.get(inst.id) == moved


def test_a_write_lock_held_past_the_busy_timeout_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    engine = tracked(statewf.Engine(f"sqlite:///{path}"))
    engine.register(sm.counter_machine())
    inst = engine.create("counter", context={"n": 0, "moves": 0})
    engine.send(inst.id, "INC")
    lite = engine.store._lite
    assert lite is not None
    lite.run(lambda conn: conn.execute("PRAGMA busy_timeout=50"))  # the kept connection
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(statewf.StoreError, match=r"database is locked.*busy timeout"):
            engine.send(inst.id, "INC")
    finally:
        holder.rollback()
        holder.close()
    assert engine.get(inst.id).version == 2  # nothing written by the failed send
    assert engine.send(inst.id, "INC").version == 3  # the connection was given back clean


def test_senders_on_threads_share_the_memory_database() -> None:
    engine = tracked(statewf.Engine("sqlite://"))
    engine.register(sm.counter_machine())
    inst = engine.create("counter", context={"n": 0, "moves": 0})
    assert engine.store.conditional_writes

    def send_many() -> None:
        for _ in range(25):
            engine.send(inst.id, "INC")

    threads = [threading.Thread(target=send_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    final = engine.get(inst.id)
    assert final.version == 101
    assert final.context["n"] == 100
    assert [r.seq for r in engine.history(inst.id)] == list(range(1, 102))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(json_values | st.lists(st.text(max_size=3), max_size=3), max_size=8))
def test_the_short_json_encoder_gives_sqlalchemys_text(values: list[Any]) -> None:
    dialect = sa.create_engine("sqlite://").dialect
    for none_as_null in (True, False):  # None: SQL NULL, or JSON null's text
        encode = sa.JSON(none_as_null=none_as_null).dialect_impl(dialect).bind_processor(dialect)
        assert encode is not None
        short = _short_json(encode, none_as_null=none_as_null)
        for value in [None, *values, *values]:  # the second time from the memo
            assert short(value) == encode(value)
            if isinstance(value, list):  # the log row's source and target are tuples
                assert short(tuple(value)) == encode(value)


@given(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]))
    | st.datetimes(timezones=st.timezones())
)
def test_the_one_step_instant_text_is_sqlalchemys(value: datetime) -> None:
    dialect = sa.create_engine("sqlite://").dialect
    type_ = UTCDateTime()
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    fast = _utc_text(type_, dialect, process)
    assert fast(value) == process(value)
    utc = value.astimezone(UTC)
    assert fast(utc) == process(utc)


def test_the_one_step_instant_text_refuses_a_naive_instant_as_sqlalchemy_does() -> None:
    dialect = sa.create_engine("sqlite://").dialect
    type_ = UTCDateTime()
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    with pytest.raises(ValueError, match="timezone-aware"):
        _utc_text(type_, dialect, process)(datetime(2030, 1, 1))
    assert _utc_text(type_, dialect, process)(None) is None


@given(st.lists(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))]))))
def test_instants_formatted_through_a_shared_slot_keep_their_own_text(
    values: list[datetime],
) -> None:
    dialect = sa.create_engine("sqlite://").dialect
    type_ = UTCDateTime()
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    slot: list[tuple[Any, Any]] = [(None, None)]
    one, two = (_utc_text(type_, dialect, process, slot) for _ in range(2))
    for value in values:  # each instant twice in a row (the row's and the snapshot's)
        assert one(value) == two(value) == process(value)
    assert one(None) is None


def test_the_move_leaves_a_lease_and_the_unchanged_columns_as_they_were(tmp_path: Path) -> None:
    """A send's UPDATE names only the columns whose value changes (status, wake_at and the
    context only when they do): the lease another process holds stays, and each row,
    read back, is the one the full update writes (the locked path)."""
    clock = ManualClock()
    fast = tracked(statewf.Engine(f"sqlite:///{tmp_path / 'fast.db'}", clock=clock))
    fast.register(expiring, sm.counter_machine())
    inst = fast.create("expiring", id="e1")
    conn = sqlite3.connect(tmp_path / "fast.db", isolation_level=None)
    try:
        conn.execute(
            "UPDATE statewf_instances SET lease_owner = 'w1', "
            "lease_expires_at = '2031-01-01 00:00:00.000000' WHERE id = 'e1'"
        )
        for event in ("POKE", "PAY", "REFUND", "POKE"):  # internal, wake_at cleared, set again
            clock.advance(timedelta(seconds=1))
            inst = fast.send(inst.id, event)
            assert fast.store.read_instance(inst.id) == inst
        counter = fast.create("counter", id="c1", context={"n": 0, "moves": 0})
        for event in ("INC", "FLIP", "INC"):
            counter = fast.send(counter.id, event)
            assert fast.store.read_instance(counter.id) == counter
        lease = conn.execute(
            "SELECT lease_owner, lease_expires_at FROM statewf_instances WHERE id = 'e1'"
        ).fetchone()
        assert lease == ("w1", "2031-01-01 00:00:00.000000")
    finally:
        conn.close()
    assert fast.replay(inst.id) == inst
    assert fast.replay(counter.id) == counter
    assert inst.wake_at is not None
    assert inst.status == "active"
    lite = fast.store._lite
    assert lite is not None
    assert len(lite._moves) >= 3  # the partial moves were the ones taken
