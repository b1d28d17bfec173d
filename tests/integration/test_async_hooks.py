"""Async hooks on machines: ``async def`` actions, entry/exit hooks and effects.

They run on the caller's event loop under the ``*_async`` methods, to completion
before the decision is written, with the atomicity of plain hooks; guards stay
synchronous, and an async guard is a ``SpecError`` saying why.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import statewf
from statewf.testing import ManualClock
from tests.conftest import tracked


class Order(BaseModel):
    total: int = 0
    checked: bool = False
    loops: list[str] = []
    trail: list[str] = []


def engine_for(db: dict[str, Any], *machines: statewf.Machine, **kw: Any) -> statewf.Engine:
    engine = statewf.Engine(**db, **kw)
    tracked(engine)
    engine.register(*machines)
    return engine


def loop_name() -> str:
    """A name for the running loop: which loop an async hook ran on."""
    return str(id(asyncio.get_running_loop()))


async def price(ctx: Order, ev: dict[str, Any]) -> None:
    await asyncio.sleep(0)          # really suspends: the hook is awaited, not called
    ctx.total = ev["amount"]
    ctx.loops.append(loop_name())


async def stamp_entry(ctx: Order, ev: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"trail": [*ctx.trail, "enter"], "checked": True}


async def stamp_exit(ctx: Order, ev: Any) -> None:
    await asyncio.sleep(0)
    ctx.trail.append("exit")


async def refuse(ctx: Order, ev: Any) -> None:
    ctx.total = 999_999             # changed, then the hook fails: nothing is kept
    await asyncio.sleep(0)
    raise RuntimeError("the pricing service said no")


calls: list[tuple[str, str, int]] = []


@statewf.effect
async def notify(call: statewf.EffectCall) -> None:
    await asyncio.sleep(0)
    calls.append((call.instance_id, loop_name(), call.attempt))


flaky_attempts: list[int] = []


@statewf.effect
async def flaky(call: statewf.EffectCall) -> None:
    await asyncio.sleep(0)
    flaky_attempts.append(call.attempt)
    if call.attempt < 2:
        raise ConnectionError("warehouse down")


order = statewf.Machine(
    "async-order",
    context=Order,
    initial="cart",
    states={
        "cart": statewf.State(
            on={"PRICE": statewf.transition("priced", action=price), "FAIL": statewf.transition(
                "priced", action=refuse)},
            on_exit=stamp_exit,
        ),
        "priced": statewf.State(
            on_enter=[stamp_entry, notify], on={"SHIP": "shipped"}
        ),
        "shipped": statewf.State(final=True, on_enter=flaky),
    },
)


def test_async_actions_and_entry_exit_hooks_run_on_the_callers_loop(db: dict[str, Any]) -> None:
    engine = engine_for(db, order)
    calls.clear()

    async def app() -> tuple[statewf.Instance, str]:
        inst = await engine.create_async("async-order")
        after = await engine.send_async(inst.id, "PRICE", {"amount": 42})
        return after, loop_name()

    after, app_loop = asyncio.run(app())
    assert after.state == "priced"
    assert after.context["total"] == 42
    assert after.context["loops"] == [app_loop]            # the application's own loop
    assert after.context["trail"] == ["exit", "enter"]     # exit, action, entry in order
    assert after.context["checked"] is True
    stored = engine.get(after.id)
    assert stored.context == after.context                  # what the hooks did was committed
    assert engine.replay(after.id) == stored
    assert [(i, loop) for i, loop, _ in calls] == [(after.id, app_loop)]  # effect, same loop


def test_a_failing_async_action_changes_nothing(db: dict[str, Any]) -> None:
    engine = engine_for(db, order)
    inst = engine.create(order)
    before = engine.history(inst.id)

    async def app() -> None:
        await engine.send_async(inst.id, "FAIL")

    with pytest.raises(statewf.ActionFailed, match="the pricing service said no") as info:
        asyncio.run(app())
    assert info.value.instance_id == inst.id
    assert info.value.event == "FAIL"
    assert engine.get(inst.id).state == "cart"
    assert engine.get(inst.id).context["total"] == 0
    assert engine.get(inst.id).version == inst.version
    assert engine.history(inst.id) == before
    assert engine.effects(instance_id=inst.id) == []


def test_plain_synchronous_code_can_send_to_a_machine_with_async_hooks(
    db: dict[str, Any],
) -> None:
    engine = engine_for(db, order)
    inst = engine.create(order)
    after = engine.send(inst.id, "PRICE", {"amount": 7})   # a script: a private loop
    assert after.context["total"] == 7
    assert after.context["trail"] == ["exit", "enter"]
    assert engine.get(inst.id).context == after.context


def test_sync_send_from_inside_a_running_loop_says_to_await_send_async(
    db: dict[str, Any],
) -> None:
    engine = engine_for(db, order)
    inst = engine.create(order)

    async def app() -> None:
        engine.send(inst.id, "PRICE", {"amount": 7})        # blocks the loop: refused

    with pytest.raises(statewf.ActionFailed, match="send_async") as info:
        asyncio.run(app())
    assert "price" in info.value.message
    assert engine.get(inst.id).state == "cart"
    assert engine.get(inst.id).version == inst.version


def test_async_effects_are_retried_and_dispatched_on_the_callers_loop(
    db: dict[str, Any],
) -> None:
    clock = ManualClock()
    engine = engine_for(db, order, clock=clock, dispatch_effects=False)
    flaky_attempts.clear()
    inst = engine.create(order)
    engine.send(inst.id, "PRICE", {"amount": 1})
    engine.send(inst.id, "SHIP")

    async def dispatch() -> int:
        return await engine.dispatch_effects_async()

    assert asyncio.run(dispatch()) == 2                     # notify, then flaky's first try
    assert flaky_attempts == [1]
    failed = [e for e in engine.effects(instance_id=inst.id) if e.name == "flaky"]
    assert failed[0].status == "pending"
    assert "warehouse down" in (failed[0].last_error or "")
    clock.advance(timedelta(minutes=10))
    assert asyncio.run(dispatch()) == 1
    assert flaky_attempts == [1, 2]
    assert {e.name: e.status for e in engine.effects(instance_id=inst.id)} == {
        "notify": "done",
        "flaky": "done",
    }


async def slow_reminder(ctx: dict[str, Any], ev: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"reminded": ctx.get("reminded", 0) + 1}


def test_a_timer_with_an_async_action_fires_from_the_timer_thread(db: dict[str, Any]) -> None:
    clock = ManualClock()
    reminder = statewf.Machine("async-reminder", initial="open", states={
        "open": statewf.State(
            on={"PAY": "paid"},
            after={"1 day": statewf.transition(internal=True, action=slow_reminder)},
        ),
        "paid": statewf.State(final=True),
    })
    engine = engine_for(db, reminder, clock=clock)
    inst = engine.create(reminder)
    clock.advance(timedelta(days=2))
    assert engine.fire_due_timers() == 1
    assert engine.get(inst.id).context == {"reminded": 1}


def test_async_hooks_in_a_statechart(db: dict[str, Any]) -> None:
    async def enter_region(ctx: dict[str, Any], ev: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"entered": [*ctx.get("entered", []), "region"]}

    chart = statewf.Machine("async-chart", initial="work", states={
        "work": statewf.State(
            parallel=True,
            states={
                "a": statewf.State(initial="a1", states={
                    "a1": statewf.State(on={"GO": "a2"}),
                    "a2": statewf.State(on_enter=enter_region),
                }),
                "b": statewf.State(initial="b1", states={"b1": statewf.State()}),
            },
        ),
    })
    engine = engine_for(db, chart)

    async def app() -> statewf.Instance:
        inst = await engine.create_async("async-chart")
        return await engine.send_async(inst.id, "GO")

    after = asyncio.run(app())
    assert set(after.configuration) >= {"work.a.a2", "work.b.b1"}
    assert after.context == {"entered": ["region"]}
    assert engine.get(after.id).context == {"entered": ["region"]}


async def async_guard(ctx: Any, ev: Any) -> bool:
    return True


def test_an_async_guard_is_a_spec_error_that_says_why() -> None:
    with pytest.raises(statewf.SpecError, match="guards must be synchronous and pure") as info:
        statewf.Machine("m", initial="a", states={
            "a": statewf.State(on={"GO": statewf.transition("a", guard=async_guard)})})
    assert "async_guard" in info.value.message
    assert "event payload" in info.value.message            # what to do instead

    with pytest.raises(statewf.SpecError, match="synchronous and pure"):
        statewf.Machine("m", initial="a", states={
            "a": statewf.State(on={"GO": statewf.transition("a", unless=async_guard)})})

    registry = statewf.Registry()
    registry.guard(async_guard)
    with pytest.raises(statewf.SpecError, match="synchronous and pure"):
        statewf.Machine("m", initial="a", registry=registry, states={
            "a": statewf.State(on={"GO": statewf.transition("a", guard="async_guard")})})

    with pytest.raises(statewf.SpecError, match="synchronous and pure"):       # a statechart
        statewf.Machine("m", initial="p", states={"p": statewf.State(initial="x", states={
            "x": statewf.State(on={"GO": statewf.transition("y", guard=async_guard)}),
            "y": statewf.State(),
        })})


def test_a_guard_returning_an_awaitable_is_refused_when_it_runs(db: dict[str, Any]) -> None:
    sneaky = statewf.Machine("sneaky", initial="a", states={
        "a": statewf.State(
            on={"GO": statewf.transition("b", guard=lambda c, e: async_guard(c, e))}
        ),
        "b": statewf.State(),
    })
    engine = engine_for(db, sneaky)
    inst = engine.create(sneaky)
    with pytest.raises(statewf.ActionFailed, match="returned an awaitable; guards must be"):
        engine.send(inst.id, "GO")
    assert engine.get(inst.id).state == "a"
    assert engine.get(inst.id).version == inst.version
