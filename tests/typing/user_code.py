"""Ordinary user code against statewf's public API; CI type-checks it with mypy --strict.

It is not run by pytest: it only has to type-check, which keeps the public
signatures honest (a wrong return type or a missing annotation breaks CI).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from pydantic import BaseModel

import statewf
from statewf.testing import ManualClock


class Order(BaseModel):
    order_id: str
    total: float


class Payment(BaseModel):
    amount: float


def covers(ctx: Order, ev: Payment) -> bool:
    return ev.amount >= ctx.total


@statewf.effect
def notify(call: statewf.EffectCall) -> None:
    key: str = call.idempotency_key
    print(key, call.context["order_id"])


machine: statewf.Machine = statewf.Machine(
    "typed-order",
    initial="pending",
    context=Order,
    states={
        "pending": statewf.State(
            on={"PAY": statewf.transition("paid", payload=Payment, guard=covers)},
            after={"7 days": "expired"},
        ),
        "paid": statewf.State(on_enter=notify, final=True),
        "expired": statewf.State(final=True),
    },
)


def use_engine(engine: statewf.Engine) -> list[str]:
    engine.register(machine)
    inst: statewf.Instance = engine.create(machine, context=Order(order_id="1", total=3))
    inst = engine.send(inst.id, "PAY", Payment(amount=3))
    state: str = inst.state
    version: int = inst.version
    wake: datetime | None = inst.wake_at
    page: statewf.Page[statewf.Instance] = engine.list(machine="typed-order", limit=10)
    cursor: str | None = page.next_cursor
    rows: list[statewf.TransitionRecord] = engine.history(inst.id)
    then: statewf.Instance = engine.state_at(inst.id, 1)
    fired: int = engine.fire_due_timers()
    print(state, version, wake, cursor, len(rows), then.state, fired)
    try:
        engine.send(inst.id, "PAY", {"amount": 1})
    except statewf.EventRejected as exc:
        print(exc.instance_id, exc.event, exc.state, exc.message)
    return engine.allowed_events(inst.id)


async def use_async(engine: statewf.Engine) -> statewf.Instance:
    inst = await engine.create_async("typed-order", context={"order_id": "2", "total": 1})
    return await engine.send_async(inst.id, "PAY", {"amount": 1})


def main() -> None:
    clock = ManualClock()
    clock.advance(timedelta(days=1))
    with statewf.Engine("sqlite:///typed.db", clock=clock) as engine:
        print(use_engine(engine))
        print(asyncio.run(use_async(engine)).state)


# ---------------------------------------------------------------- statecharts

chart = statewf.Machine(
    "typed-chart",
    initial="open",
    states={
        "open": statewf.State(
            initial="a",
            on={"CANCEL": "done"},
            states={
                "a": statewf.State(
                    on={"GO": statewf.transition("b", action=[statewf.Raise("NEXT")])},
                    after={"1 hour": "b"},
                ),
                "b": statewf.State(
                    always=statewf.transition("done", guard=statewf.In("a")),
                    on={"SEND": statewf.transition(action=statewf.Send("X", delay="1 day"))},
                ),
                "h": statewf.History(deep=True),
            },
        ),
        "done": statewf.State(final=True),
    },
)


def use_chart(engine: statewf.Engine) -> None:
    inst = engine.create(chart)
    leaves: tuple[str, ...] = inst.configuration
    ids: tuple[str, ...] = inst.state_ids
    active: bool = inst.matches("open")
    print(leaves, ids, active, inst.history, [t.due_at for t in inst.timers])
    scxml: statewf.Machine = statewf.load_machine("chart.scxml")
    print(scxml.unreachable)


# ---------------------------------------------------------------- durable workflows

import durable  # noqa: E402  (kept next to the code that uses it)


class Signup(BaseModel):
    email: str


def create_account(email: str) -> dict[str, str]:
    return {"id": "u1", "email": email}


@durable.workflow("typed-onboard", input=Signup, retries=2, timeout="1h")
async def onboard(ctx: durable.Context[Signup]) -> dict[str, str]:
    email: str = ctx.input.email
    user = await ctx.step.run("create-account", create_account, email)
    await ctx.step.sleep("cool-off", {"minutes": 5})
    return {"user_id": user["id"]}


async def use_workflows() -> None:
    async with durable.WorkflowEngine("sqlite:///typed.db", workflows=[onboard]) as engine:
        run: durable.WorkflowRun = await engine.start_workflow(
            "typed-onboard", {"email": "a@example.com"}, resource_id="user-1"
        )
        progress: durable.Progress = await engine.check_progress(run.id)
        print(progress.completed_steps, progress.total_steps)
        await engine.trigger_event(run.id, "confirmed", {"ok": True})
        await engine.cancel_workflow(run.id)


async def use_my_own_pool() -> None:
    """The application's own SQLAlchemy engine, handed to every face (no second pool)."""
    from sqlalchemy import create_engine

    pool = create_engine("sqlite:///typed-own.db")
    machines = statewf.Engine(pool)
    async with durable.WorkflowEngine(pool, workflows=[onboard]) as engine:
        await engine.start_workflow(onboard, Signup(email="b@example.com"))
    async with durable.Client(pool) as client:
        await client.get_runs(limit=5)
    worker = durable.Worker(pool, workflows=[onboard])
    await worker.close()
    machines.close()
