"""Regression tests for the core review: each fails on the code before its fix."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import statewf
from statewf.testing import ManualClock
from tests.conftest import tracked


def engine_for(db: dict[str, Any], *machines: statewf.Machine, **kw: Any) -> statewf.Engine:
    engine = statewf.Engine(**db, **kw)
    tracked(engine)
    engine.register(*machines)
    return engine


class Bag(BaseModel):
    data: dict[str, Any] = {}
    total: int = 1


def bump_nested(ctx: Bag, ev: object) -> None:
    ctx.data.setdefault("x", {"n": 0})
    ctx.data["x"]["n"] += 1


def bump_then_fail(ctx: Bag, ev: object) -> None:
    ctx.data["x"]["n"] += 100
    raise RuntimeError("after the change")


nested = statewf.Machine("nested", initial="a", context=Bag, states={
    "a": statewf.State(on={
        "BUMP": statewf.transition(internal=True, action=bump_nested),
        "FAIL": statewf.transition(internal=True, action=bump_then_fail),
        "NOOP": statewf.transition(internal=True, action=lambda c, e: None),
        "TYPO": statewf.transition(internal=True, action=lambda c, e: {"no_such_field": 1}),
    }),
})


def test_hooks_never_touch_the_stored_snapshot(db: dict[str, Any]) -> None:
    engine = engine_for(db, nested)
    inst = engine.create(nested)
    engine.send(inst.id, "BUMP")
    engine.send(inst.id, "BUMP")
    with pytest.raises(statewf.ActionFailed):
        engine.send(inst.id, "FAIL")
    engine.send(inst.id, "NOOP")
    assert engine.get(inst.id).context["data"] == {"x": {"n": 2}}
    assert engine.replay(inst.id) == engine.get(inst.id)


def test_changing_a_returned_snapshot_changes_nothing_stored(db: dict[str, Any]) -> None:
    engine = engine_for(db, nested)
    inst = engine.create(nested)
    after = engine.send(inst.id, "BUMP")
    after.context["total"] = 999          # a caller scribbling on its copy
    after.context["data"]["x"]["n"] = 999
    engine.send(inst.id, "NOOP")
    assert engine.get(inst.id).context == {"data": {"x": {"n": 1}}, "total": 1}
    assert engine.replay(inst.id) == engine.get(inst.id)


def test_a_dict_update_naming_no_field_is_action_failed(db: dict[str, Any]) -> None:
    engine = engine_for(db, nested)
    inst = engine.create(nested)
    with pytest.raises(statewf.ActionFailed, match="no_such_field"):
        engine.send(inst.id, "TYPO")
    assert engine.get(inst.id).version == 1


def test_effects_with_one_name_are_a_spec_error() -> None:
    def make(text: str) -> statewf.Effect:
        @statewf.effect
        def send_mail(call: statewf.EffectCall) -> None:
            print(text)
        return send_mail  # type: ignore[no-any-return]

    with pytest.raises(statewf.SpecError, match="two different effects are named"):
        statewf.Machine("m", initial="a", states={
            "a": statewf.State(on_enter=[make("hello"), make("bye")])})
    with pytest.raises(statewf.SpecError, match="cannot be a guard"):
        statewf.Machine("m", initial="a", states={
            "a": statewf.State(on={"GO": statewf.transition("a", guard=make("x"))})})


def test_a_due_timer_fires_before_an_event_is_decided(db: dict[str, Any]) -> None:
    clock = ManualClock()
    order = statewf.Machine("unpaid", initial="pending", states={
        "pending": statewf.State(on={"PAY": "paid"}, after={"7 days": "expired"}),
        "paid": statewf.State(final=True),
        "expired": statewf.State(final=True),
    })
    engine = engine_for(db, order, clock=clock)
    inst = engine.create(order)
    clock.advance(timedelta(days=8))             # no scheduler ran
    with pytest.raises(statewf.InstanceFinished):
        engine.send(inst.id, "PAY")
    assert engine.get(inst.id).version == 1      # a rejected event writes nothing
    assert engine.fire_due_timers() == 1
    assert engine.get(inst.id).state == "expired"

    # an accepted event commits the timers that came due before it, in order
    reminded = statewf.Machine("reminded", initial="open", states={
        "open": statewf.State(on={"PAY": "paid"}, after={
            "1 day": statewf.transition(internal=True, action=lambda c, e: {"reminded": True}),
        }),
        "paid": statewf.State(final=True),
    })
    engine.register(reminded)
    other = engine.create(reminded)
    clock.advance(timedelta(days=2))
    paid = engine.send(other.id, "PAY")
    assert (paid.state, paid.context) == ("paid", {"reminded": True})
    assert [(r.kind, r.event) for r in engine.history(other.id)] == [
        ("create", None), ("timer", "after 1 day"), ("event", "PAY")]
    assert engine.replay(other.id) == paid


def test_timers_of_unregistered_versions_do_not_block_or_spin(db: dict[str, Any]) -> None:
    clock = ManualClock()

    def machine(version: str) -> statewf.Machine:
        return statewf.Machine("versioned", version=version, initial="a", states={
            "a": statewf.State(after={"1 hour": "b"}, description=version),
            "b": statewf.State(final=True),
        })

    old = engine_for(db, machine("1"), clock=clock)
    for _ in range(3):
        old.create(machine("1"))
    new = engine_for(db, machine("2"), clock=clock)
    fresh = new.create(machine("2"))
    clock.advance(timedelta(hours=2))
    assert new.fire_due_timers(limit=2) == 1     # v1 instances are not its business
    assert new.get(fresh.id).state == "b"
    assert new.next_wake_at() is None
    started = time.monotonic()
    new.run_timers(poll_interval=0.2, max_batches=3)
    assert time.monotonic() - started >= 0.09    # it slept; it did not spin
    assert old.fire_due_timers() == 3


def test_effects_run_once_each_with_concurrent_dispatchers(db: dict[str, Any]) -> None:
    runs: list[str] = []
    lock = threading.Lock()

    @statewf.effect
    def slow(call: statewf.EffectCall) -> None:
        with lock:
            runs.append(call.idempotency_key)
        time.sleep(0.05)

    machine = statewf.Machine("outboxed", initial="a", states={
        "a": statewf.State(on={"GO": statewf.transition(internal=True, action=slow)})})
    engine = engine_for(db, machine, dispatch_effects=False)
    inst = engine.create(machine)
    for _ in range(6):
        engine.send(inst.id, "GO")
    threads = [threading.Thread(target=engine.dispatch_effects) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(runs) == sorted(f"{inst.id}:{seq}:0" for seq in range(2, 8))
    assert {e.status for e in engine.effects(instance_id=inst.id)} == {"done"}


def test_send_does_not_raise_after_its_commit(db: dict[str, Any]) -> None:
    @statewf.effect
    def ship(call: statewf.EffectCall) -> None:
        return None

    machine = statewf.Machine("after-commit", initial="a", states={
        "a": statewf.State(on={"SHIP": statewf.transition(internal=True, action=ship)})})
    engine = engine_for(db, machine)
    inst = engine.create(machine)

    def broken(*_: Any, **__: Any) -> None:
        raise statewf.StoreError("connection lost right after the commit")

    engine.outbox.run_claimed = broken  # type: ignore[method-assign]
    assert engine.send(inst.id, "SHIP").version == 2
    # still in the outbox, leased to this process; any dispatcher takes it after that
    [effect] = engine.effects(instance_id=inst.id)
    assert (effect.status, effect.attempts) == ("pending", 1)


def test_registering_two_definitions_under_one_version_conflicts(db: dict[str, Any]) -> None:
    first = statewf.Machine("reg", initial="a", states={"a": statewf.State(description="1")})
    second = statewf.Machine("reg", initial="a", states={"a": statewf.State(description="2")})
    engine_for(db, first)
    with pytest.raises(statewf.MachineVersionConflict):
        engine_for(db, second)


def test_in_memory_sqlite_works_across_threads() -> None:
    machine = statewf.Machine("mem", initial="a", states={
        "a": statewf.State(on={"GO": "b"}), "b": statewf.State(final=True)})
    engine = engine_for({"url": "sqlite://"}, machine)
    inst = engine.create(machine)
    assert asyncio.run(engine.send_async(inst.id, "GO")).state == "b"


def test_database_passwords_stay_out_of_errors() -> None:
    with pytest.raises(statewf.InvalidInput) as info:
        statewf.Engine("postgresql+nodriver://user:s3cret@db.example/app")
    assert "s3cret" not in str(info.value)


def test_text_that_looks_like_a_nul_escape_is_kept(db: dict[str, Any]) -> None:
    engine = engine_for(db, nested)
    inst = engine.create(nested, context={"data": {"path": "C:\\u0000dir"}})
    assert engine.get(inst.id).context["data"]["path"] == "C:\\u0000dir"
    with pytest.raises(statewf.InvalidPayload, match="NUL"):
        engine.create(nested, context={"data": {"path": "a\x00b"}})


def test_yaml_machines_declare_delayed_transitions(tmp_path: Any) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: yaml-timers\ninitial: a\nstates:\n"
        "  a:\n    after: {'7 days': b}\n    timeout: 1 hour\n    on_timeout: c\n"
        "  b: {final: true}\n  c: {final: true}\n"
    )
    machine = statewf.load_machine(path)
    assert [t.label for t in machine.timers["a"]] == ["timeout 1 hour", "after 7 days"]
