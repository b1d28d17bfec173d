"""Machine migrations on a real SQLite file and a real PostgreSQL schema.

An instance moves to another version of its machine through one ``migrate`` row:
the fold gives the stored snapshot across it, ``state_at`` shows each version on its
side of the row, a rejected migration writes nothing, a concurrent writer is detected,
and the new state's delayed transitions and statechart configuration are what the
new version expects.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from db_snapshot import dump_tables, frozen
from pydantic import BaseModel

import statewf
from statewf import (
    ConcurrencyConflict,
    Engine,
    InvalidInput,
    MachineNotRegistered,
    MigrationRejected,
    StatewfError,
)
from statewf.browse import state_counts
from statewf.fold import fold
from statewf.migrate import MIGRATE_ATTEMPTS
from statewf.testing import ManualClock

# ------------------------------------------------------------------ machines


class OrderV1(BaseModel):
    """Context of version 1."""

    total: float


class OrderV2(BaseModel):
    """Context of version 2: the total is in cents, with a currency."""

    cents: int
    currency: str


ENTERED: list[str] = []


def note_entry(ctx: Any, ev: Any) -> None:
    """Entry action: remembers that it ran (a migration must never run it)."""
    ENTERED.append("entered")


def order(version: str) -> statewf.Machine:
    """Version 1: placed, late, lost, shipped, cancelled. Version 2 renames late to
    delayed, drops lost, adds a 3-day timer on delayed and a hold event."""
    if version == "1":
        return statewf.Machine(
            "order",
            version="1",
            initial="placed",
            context=OrderV1,
            states={
                "placed": statewf.State(
                    on={"ship": "shipped", "delay": "late", "lose": "lost"},
                    after={"7 days": "cancelled"},
                ),
                "late": statewf.State(on={"ship": "shipped"}, after={"2 days": "cancelled"}),
                "lost": statewf.State(on={"ship": "shipped"}),
                "shipped": statewf.State(final=True),
                "cancelled": statewf.State(final=True),
            },
        )
    return statewf.Machine(
        "order",
        version=version,
        initial="placed",
        context=OrderV2,
        states={
            "placed": statewf.State(
                on={"ship": "shipped", "delay": "delayed", "hold": "held"},
                after={"7 days": "cancelled"},
            ),
            "delayed": statewf.State(
                on={"ship": "shipped"}, after={"3 days": "cancelled"}, on_enter=[note_entry]
            ),
            "held": statewf.State(on={"ship": "shipped"}),
            "shipped": statewf.State(final=True),
            "cancelled": statewf.State(final=True),
        },
    )


def to_cents(old: dict[str, Any]) -> dict[str, Any]:
    """The context upgrade from version 1 to 2."""
    return {"cents": round(old["total"] * 100), "currency": "EUR"}


def shipping(version: str) -> statewf.Machine:
    """A statechart. Version 2 adds a parallel region (billing) beside packing and a
    ``after`` on the new ``packing.boxed``; ``packing.wrapped`` is renamed ``boxed``."""
    if version == "1":
        return statewf.Machine(
            "shipping",
            version="1",
            initial="work",
            states={
                "work": statewf.State(
                    initial="picking",
                    states={
                        "picking": statewf.State(on={"picked": "wrapped"}, after={"1 day": "late"}),
                        "wrapped": statewf.State(on={"done": "#sent"}),
                    },
                ),
                "late": statewf.State(on={"retry": "work"}),
                "sent": statewf.State(final=True),
            },
        )
    return statewf.Machine(
        "shipping",
        version="2",
        initial="work",
        states={
            "work": statewf.State(
                parallel=True,
                states={
                    "packing": statewf.State(
                        initial="picking",
                        states={
                            "picking": statewf.State(
                                on={"picked": "boxed"}, after={"1 day": "#late"}
                            ),
                            "boxed": statewf.State(
                                on={"done": "#sent"},
                                after={"5 days": "#late"},
                                on_enter=[note_entry],
                            ),
                        },
                    ),
                    "billing": statewf.State(
                        initial="open",
                        states={
                            "open": statewf.State(on={"bill": "billed"}),
                            "billed": statewf.State(),
                        },
                    ),
                },
            ),
            "late": statewf.State(on={"retry": "work"}),
            "sent": statewf.State(final=True),
        },
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def engine_with(db: dict[str, Any], clock: ManualClock, machine: statewf.Machine) -> Any:
    """An engine on ``db`` with ``machine`` registered (and no entry action noted yet)."""
    ENTERED.clear()
    with Engine(**db, clock=clock) as e:
        e.register(machine)
        yield e


@pytest.fixture
def engine(db: dict[str, Any], clock: ManualClock) -> Any:
    yield from engine_with(db, clock, order("1"))


def assert_fold_is_snapshot(engine: Engine, instance_id: str) -> None:
    assert fold(engine.history(instance_id)) == engine.get(instance_id)


# ------------------------------------------------------------------ the migration row


def test_a_migration_row_moves_state_version_and_context(engine: Engine) -> None:
    inst = engine.create("order", id="o1", context={"total": 12.5})
    engine.send("o1", "delay")
    engine.register(order("2"))  # version 2 beside version 1's instances
    assert engine.get("o1").machine_version == "1"

    moved = engine.migrate(
        "o1", "2", state_map={"late": "delayed"}, context=to_cents, reason="late is delayed"
    )

    assert (moved.machine_version, moved.state, moved.version) == ("2", "delayed", 3)
    assert moved.context == {"cents": 1250, "currency": "EUR"}
    assert engine.get("o1") == moved
    assert_fold_is_snapshot(engine, "o1")
    row = engine.history("o1")[-1]
    assert (row.seq, row.kind, row.source, row.target) == (3, "migrate", ("late",), ("delayed",))
    assert row.meta["from_version"] == "1"
    assert row.meta["machine_version"] == "2"
    assert row.meta["states"] == {"late": ["delayed"]}
    assert row.meta["reason"] == "late is delayed"
    assert row.context_set == {"cents": 1250, "currency": "EUR"}
    assert row.context_unset == ("total",)
    # time travel: before the row the old version, after it the new one
    before, after = engine.state_at("o1", 2), engine.state_at("o1", 3)
    assert (before.machine_version, before.state, before.context) == ("1", "late", {"total": 12.5})
    assert (after.machine_version, after.state) == ("2", "delayed")
    assert engine.state_at("o1", 1).state == inst.state == "placed"
    # no entry action ran, and the instance now follows version 2
    assert ENTERED == []
    assert engine.allowed_events("o1") == ["ship"]
    assert engine.send("o1", "ship").state == "shipped"
    assert_fold_is_snapshot(engine, "o1")


def test_an_unmapped_state_keeps_its_name_and_new_events_apply(engine: Engine) -> None:
    engine.create("order", id="o1", context={"total": 1})
    engine.register(order("2"))
    moved = engine.migrate("o1", "2", context=to_cents)
    assert (moved.state, moved.machine_version) == ("placed", "2")
    assert engine.send("o1", "hold").state == "held"  # an event only version 2 has


def test_instances_of_other_versions_go_on_side_by_side(engine: Engine) -> None:
    engine.create("order", id="old", context={"total": 1})
    engine.register(order("2"))
    new = engine.create("order", id="new", context={"cents": 1, "currency": "EUR"})
    assert new.machine_version == "2"
    assert engine.send("old", "delay").state == "late"  # still on version 1
    assert engine.send("new", "delay").state == "delayed"


# ------------------------------------------------------------------ rejections


REJECTIONS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("3", {"context": to_cents}, ["version '3' is not registered", "registered versions"]),
    ("2", {"context": to_cents}, ["its state 'late' is not in version '2'", "state_map="]),
    (
        "2",
        {"state_map": {"late": "delyed"}, "context": to_cents},
        ["maps 'late' to 'delyed'", "not a state of version '2'"],
    ),
    (
        "2",
        {"state_map": {"lat": "delayed"}, "context": to_cents},
        ["names 'lat', which version '1' does not have"],
    ),
    (
        "2",
        {"state_map": {"late": "delayed"}, "context": lambda old: 1 / 0},
        ["the context upgrade", "raised ZeroDivisionError", "fix the upgrade function"],
    ),
    (
        "2",
        {"state_map": {"late": "delayed"}},
        ["its context does not fit version '2'", "cents", "pass context=FUNCTION"],
    ),
    ("1", {}, ["it is on version '1' already"]),
]


@pytest.mark.parametrize(("to", "options", "words"), REJECTIONS)
def test_a_rejected_migration_changes_nothing(
    engine: Engine, to: str, options: dict[str, Any], words: list[str]
) -> None:
    engine.create("order", id="o1", context={"total": 2})
    engine.send("o1", "delay")
    engine.register(order("2"))
    tables = dump_tables(engine)
    before = frozen(engine, "o1")

    with pytest.raises(MigrationRejected) as exc:
        engine.migrate("o1", to, **options)

    message = exc.value.message
    assert "instance 'o1' of machine 'order' from version '1'" in message
    assert message.endswith("nothing changed")
    for word in words:
        assert word in message
    assert exc.value.instance_id == "o1"
    assert exc.value.state == "late"
    assert exc.value.details["to_version"] == to
    assert isinstance(exc.value, StatewfError)
    assert frozen(engine, "o1") == before
    assert dump_tables(engine) == tables
    assert engine.get("o1").machine_version == "1"


def test_malformed_arguments_are_invalid_input(engine: Engine) -> None:
    engine.create("order", id="o1", context={"total": 2})
    engine.register(order("2"))
    for kwargs in (
        {"to_version": 2},
        {"to_version": "2", "state_map": ["late"]},
        {"to_version": "2", "state_map": {"late": 3}},
        {"to_version": "2", "context": "not callable"},
    ):
        with pytest.raises(InvalidInput):
            engine.migrate("o1", **kwargs)
    assert engine.get("o1").version == 1


# ------------------------------------------------------------------ unregistered versions


def test_an_instance_of_an_unregistered_version_names_it_and_can_migrate(
    db: dict[str, Any], clock: ManualClock
) -> None:
    with Engine(**db, clock=clock) as first:
        first.register(order("1"))
        first.create("order", id="o1", context={"total": 3})
    with Engine(**db, clock=clock) as second:
        second.register(order("2"))
        before = frozen(second, "o1")
        with pytest.raises(MachineNotRegistered) as exc:
            second.send("o1", "ship")
        assert "machine 'order' version '1'" in exc.value.message
        assert "engine.migrate('o1', VERSION)" in exc.value.message
        assert "statewf instances migrate --machine order --from 1" in exc.value.cli_message
        assert exc.value.details["version"] == "1"
        with pytest.raises(MachineNotRegistered, match="version '1'"):
            second.allowed_events("o1")
        assert frozen(second, "o1") == before
        counts = state_counts(second, machine="order")
        assert [(c.version, c.state, c.count, c.registered) for c in counts] == [
            ("1", "placed", 1, False)
        ]
        # the old code is gone, but its instances can still move on
        moved = second.migrate("o1", "2", context=to_cents)
        assert moved.machine_version == "2"
        assert second.send("o1", "ship").state == "shipped"
        assert [(c.version, c.state, c.registered) for c in state_counts(second)] == [
            ("2", "shipped", True)
        ]


# ------------------------------------------------------------------ concurrency


def test_a_send_during_a_migration_is_detected_and_the_migration_decided_again(
    engine: Engine,
) -> None:
    engine.create("order", id="o1", context={"total": 4})
    engine.register(order("2"))
    calls: list[float] = []

    def upgrade(old: dict[str, Any]) -> dict[str, Any]:
        calls.append(old["total"])
        if len(calls) == 1:  # another writer moves the instance meanwhile (still on v1)
            engine.send("o1", "delay")
        return to_cents(old)

    moved = engine.migrate("o1", "2", state_map={"late": "delayed"}, context=upgrade)

    assert calls == [4, 4]  # decided twice: the first decision was on a stale snapshot
    log = engine.history("o1")
    assert [(r.kind, r.event) for r in log] == [
        ("create", None),
        ("event", "delay"),
        ("migrate", None),
    ]
    assert log[-1].source == ("late",)
    assert (moved.state, moved.version) == ("delayed", 3)
    assert_fold_is_snapshot(engine, "o1")


def test_a_migration_that_keeps_losing_the_race_writes_nothing(engine: Engine) -> None:
    def ticking(version: str) -> statewf.Machine:
        return statewf.Machine(
            "ticker", version=version, initial="a", states={"a": statewf.State(on={"tick": "a"})}
        )

    engine.register(ticking("1"), ticking("2"))
    engine.create("ticker", id="t1", version="1")

    def upgrade(old: dict[str, Any]) -> dict[str, Any]:
        engine.send("t1", "tick")  # someone moves it every time
        return old

    with pytest.raises(ConcurrencyConflict, match="kept changing") as exc:
        engine.migrate("t1", "2", context=upgrade)
    assert exc.value.instance_id == "t1"
    log = engine.history("t1")
    assert "migrate" not in {r.kind for r in log}
    assert len(log) == 1 + MIGRATE_ATTEMPTS  # the create and every interfering tick
    assert engine.get("t1").machine_version == "1"


def test_two_engines_race_the_same_migration(db: dict[str, Any], clock: ManualClock) -> None:
    with Engine(**db, clock=clock) as one, Engine(**db, clock=clock) as two:
        for e in (one, two):
            e.register(order("1"), order("2"))
        one.create("order", id="o1", context={"total": 5}, version="1")

        def upgrade(old: dict[str, Any]) -> dict[str, Any]:
            if not hasattr(upgrade, "done"):
                upgrade.done = True  # type: ignore[attr-defined]
                two.migrate("o1", "2", context=to_cents)
            return to_cents(old)

        with pytest.raises(MigrationRejected, match="on version '2' already"):
            one.migrate("o1", "2", context=upgrade)
        assert [r.kind for r in one.history("o1")] == ["create", "migrate"]
        assert_fold_is_snapshot(one, "o1")


# ------------------------------------------------------------------ timers


def test_a_shared_timer_keeps_its_deadline_and_a_new_one_counts_from_the_migration(
    engine: Engine, clock: ManualClock
) -> None:
    start = clock.now()
    engine.create("order", id="kept", context={"total": 1})
    engine.create("order", id="renamed", context={"total": 1})
    engine.send("renamed", "delay")  # late: after 2 days -> cancelled
    engine.register(order("2"))
    clock.advance(timedelta(days=1))

    kept = engine.migrate("kept", "2", context=to_cents)
    renamed = engine.migrate("renamed", "2", state_map={"late": "delayed"}, context=to_cents)

    assert kept.wake_at == start + timedelta(days=7)  # placed's 7 days, as before
    assert renamed.wake_at == clock.now() + timedelta(days=3)  # delayed's own 3 days
    clock.advance(timedelta(days=2))  # day 3: late's 2 days would have passed; nothing due
    assert engine.fire_due_timers() == 0
    clock.advance(timedelta(days=1))  # day 4: 3 days after the migration
    assert engine.fire_due_timers() == 1
    assert (engine.get("renamed").state, engine.get("kept").state) == ("cancelled", "placed")
    clock.advance(timedelta(days=3))  # day 7
    assert engine.fire_due_timers() == 1
    assert engine.get("kept").state == "cancelled"
    for instance_id in ("kept", "renamed"):
        assert_fold_is_snapshot(engine, instance_id)


def test_a_state_without_timers_has_no_wake_up(engine: Engine) -> None:
    engine.create("order", id="o1", context={"total": 1})
    engine.register(order("2"))
    moved = engine.migrate("o1", "2", state_map={"placed": "held"}, context=to_cents)
    assert (moved.state, moved.wake_at) == ("held", None)
    assert engine.next_wake_at() is None


# ------------------------------------------------------------------ statecharts


@pytest.fixture
def charts(db: dict[str, Any], clock: ManualClock) -> Any:
    yield from engine_with(db, clock, shipping("1"))


def test_a_chart_configuration_is_mapped_and_completed(charts: Engine, clock: ManualClock) -> None:
    charts.create("shipping", id="s1")
    charts.send("s1", "picked")  # work.wrapped
    charts.create("shipping", id="s2")  # work.picking, its 1-day timer pending
    picking_due = charts.get("s2").timers[0].due_at
    charts.register(shipping("2"))
    clock.advance(timedelta(hours=2))

    s1 = charts.migrate("s1", "2", state_map={"work.wrapped": "work.packing.boxed"})
    s2 = charts.migrate("s2", "2", state_map={"work.picking": "work.packing.picking"})

    # the new billing region starts in its initial state; no entry action ran
    assert s1.configuration == ("work.packing.boxed", "work.billing.open")
    assert s2.configuration == ("work.packing.picking", "work.billing.open")
    assert ENTERED == []
    # boxed's 5 days count from the migration; picking's day is the same timer: kept
    assert [(t.state, t.label, t.due_at) for t in s1.timers] == [
        ("work.packing.boxed", "after 5 days", clock.now() + timedelta(days=5))
    ]
    assert [(t.state, t.due_at) for t in s2.timers] == [("work.packing.picking", picking_due)]
    assert s1.wake_at == clock.now() + timedelta(days=5)
    for instance_id in ("s1", "s2"):
        assert_fold_is_snapshot(charts, instance_id)
        assert charts.state_at(instance_id, charts.get(instance_id).version - 1).chart
    assert charts.state_at("s1", 2).configuration == ("work.wrapped",)
    # the instance follows version 2: bill in one region, finish in the other
    assert charts.send("s1", "bill").configuration == ("work.packing.boxed", "work.billing.billed")
    assert charts.send("s1", "done").state == "sent"
    clock.advance(timedelta(days=1))
    assert charts.fire_due_timers() == 1
    assert charts.get("s2").state == "late"
    assert_fold_is_snapshot(charts, "s2")


def test_a_compound_target_enters_its_initial_state(charts: Engine) -> None:
    charts.create("shipping", id="s1")
    charts.register(shipping("2"))
    moved = charts.migrate("s1", "2", state_map={"work.picking": "work"})
    assert moved.configuration == ("work.packing.picking", "work.billing.open")


def test_a_chart_configuration_that_cannot_be_is_rejected(charts: Engine) -> None:
    charts.create("shipping", id="s1")
    charts.register(shipping("2"))
    before = frozen(charts, "s1")
    with pytest.raises(MigrationRejected, match="'late' and 'sent' at once") as exc:
        charts.migrate("s1", "2", state_map={"work.picking": ["late", "sent"]})
    assert "the top level" in exc.value.message
    with pytest.raises(MigrationRejected, match=r"its state 'work\.picking' is not in version"):
        charts.migrate("s1", "2")
    assert frozen(charts, "s1") == before


def test_a_chart_can_become_a_flat_machine_and_back(charts: Engine) -> None:
    flat = statewf.Machine(
        "shipping",
        version="3",
        initial="open",
        states={"open": statewf.State(on={"done": "sent"}), "sent": statewf.State(final=True)},
    )
    charts.register(flat)
    charts.create("shipping", id="s1", version="1")
    moved = charts.migrate("s1", "3", state_map={"work.picking": "open"})
    assert (moved.chart, moved.state, moved.timers, moved.wake_at) == (False, "open", (), None)
    assert_fold_is_snapshot(charts, "s1")
    back = charts.migrate("s1", "1", state_map={"open": "work.wrapped"})
    assert (back.chart, back.configuration) == (True, ("work.wrapped",))
    assert charts.send("s1", "done").state == "sent"
    assert_fold_is_snapshot(charts, "s1")
    assert [charts.state_at("s1", n).machine_version for n in (1, 2, 3, 4)] == ["1", "3", "1", "1"]


def test_a_timer_of_a_state_mapped_away_is_cancelled(charts: Engine) -> None:
    charts.create("shipping", id="s1")
    assert charts.get("s1").wake_at is not None  # picking's day
    charts.register(shipping("2"))
    moved = charts.migrate("s1", "2", state_map={"work.picking": "late"})
    assert (moved.configuration, moved.timers, moved.wake_at) == (("late",), (), None)
    assert charts.next_wake_at() is None
    assert_fold_is_snapshot(charts, "s1")


def test_the_async_twin(engine: Engine) -> None:
    engine.create("order", id="o1", context={"total": 1})
    engine.register(order("2"))
    moved = asyncio.run(engine.migrate_async("o1", "2", context=to_cents))
    assert moved == engine.get("o1")
    assert moved.machine_version == "2"
