"""A small world to show on the dashboard: orders of two tenants, runs in every kind of state.

Shared by the dashboard's server and browser tests and by the screenshot script.
Hostile strings sit in names, contexts, event names and errors: every page must
show them as text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

import durable
import statewf

#: Markup that would run script if any page put it in the HTML unescaped.
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&amp;"


class Pay(BaseModel):
    """The payload of ``pay``."""

    amount: int
    currency: str = "EUR"


ORDER = statewf.Machine(
    "order",
    initial="pending",
    states={
        "pending": statewf.State(
            on={
                "pay": statewf.transition("paid", payload=Pay),
                "cancel": statewf.transition("cancelled"),
            }
        ),
        "paid": statewf.State(on={"ship": statewf.transition("shipped")}),
        "shipped": statewf.State(on={"deliver": statewf.transition("delivered")}),
        "delivered": statewf.State(final=True),
        "cancelled": statewf.State(final=True),
    },
)

EVIL = statewf.Machine(
    "<b>evil</b>" + HOSTILE,
    initial="<i>start</i>" + HOSTILE,
    states={
        "<i>start</i>" + HOSTILE: statewf.State(
            on={"<u>go</u>" + HOSTILE: statewf.transition("<s>end</s>")}
        ),
        "<s>end</s>": statewf.State(final=True),
    },
)


def _pack(n: int) -> int:
    return n * 2


@durable.workflow("refund")
async def refund(ctx: durable.Context[dict[str, Any]]) -> dict[str, Any]:
    """Check, ask a person, pay back."""
    amount = await ctx.step.run("check", _pack, int(ctx.input.get("amount", 1)))
    decision = await ctx.step.approval("manager")
    if not decision.approved:
        return {"refunded": False, "reason": decision.reason}
    await ctx.step.run("pay-back", _pack, amount)
    return {"refunded": True, "by": decision.reviewer}


def _explode(text: str) -> None:
    raise ValueError(text)


@durable.workflow("import" + HOSTILE)
async def broken(ctx: durable.Context[dict[str, Any]]) -> None:
    """Fails at once, with a hostile message."""
    await ctx.step.run("parse" + HOSTILE, _explode, "bad row " + HOSTILE)


@durable.workflow("report")
async def report(ctx: durable.Context[dict[str, Any]]) -> int:
    """A few quick steps."""
    total = 0
    for i in range(3):
        total += await ctx.step.run(f"part-{i}", _pack, i)
    return total


class Arrival(BaseModel):
    """What the ``delivery`` workflow waits for."""

    carrier: str
    boxes: int


@durable.workflow("delivery")
async def delivery(ctx: durable.Context[dict[str, Any]]) -> dict[str, Any]:
    """Wait for the goods to arrive, then book them."""
    arrived = await ctx.step.wait_for("arrival", event="arrived", schema=Arrival)
    return {"booked": arrived.boxes}


class Review(BaseModel):
    """What a person answers to the ``review`` workflow's task."""

    verdict: str
    score: int


@durable.workflow("review")
async def review(ctx: durable.Context[dict[str, Any]]) -> dict[str, Any]:
    """Ask a named person to check a text, with a prompt, the text and an answer form."""
    answer = await ctx.step.human_task(
        "copy-check",
        prompt="Is this product text fit to publish? " + HOSTILE,
        context={"text": "Fresh apples " + HOSTILE, "lang": "en"},
        assignee="alice",
        schema=Review,
    )
    return {"verdict": answer.verdict, "score": answer.score}


WORKFLOWS = [refund, broken, report, delivery, review]


@dataclass
class World:
    """What the seed made: the engine and the ids, by role."""

    engine: statewf.Engine
    ids: dict[str, str] = field(default_factory=dict)


def until(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Wait (in real time) until ``check()`` holds; fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def seed(engine: statewf.Engine) -> World:
    """Instances and finished or waiting runs of tenants ``acme`` and ``globex``."""
    engine.register(ORDER, EVIL)
    world = World(engine)
    for name, tenant in (("acme-1", "acme"), ("acme-2", "acme"), ("globex-1", "globex")):
        engine.create("order", id=f"order-{name}", resource_id=tenant, context={"note": name})
    engine.send("order-acme-2", "pay", {"amount": 30})
    engine.send("order-acme-2", "ship")
    world.ids |= {"pending": "order-acme-1", "shipped": "order-acme-2", "globex": "order-globex-1"}
    evil = engine.create(EVIL.name, id="evil" + HOSTILE, resource_id="acme", context={"x": HOSTILE})
    world.ids["evil"] = evil.id

    async def runs() -> None:
        async with durable.WorkflowEngine(engine, workflows=WORKFLOWS) as wf:
            made = {
                "waiting": await wf.start_workflow(refund, {"amount": 5}, resource_id="acme"),
                "globex_waiting": await wf.start_workflow(
                    refund, {"amount": 7}, resource_id="globex"
                ),
                "failed": await wf.start_workflow(broken, {}, resource_id="acme"),
                "completed": await wf.start_workflow(report, {}, resource_id="acme"),
                "event_waiting": await wf.start_workflow(delivery, {}, resource_id="acme"),
                "task_waiting": await wf.start_workflow(review, {}, resource_id="acme"),
            }
            for key, run in made.items():
                world.ids[key] = run.id
            for key in made:
                final = (
                    "waiting"
                    if "waiting" in key
                    else ("failed" if key == "failed" else "completed")
                )
                for _ in range(2000):
                    if engine.get(made[key].id).status == final:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError(f"run {key} did not become {final}")

    asyncio.run(runs())
    return world


class Executor:
    """A WorkflowEngine executing the seed's workflows in a thread, like a worker process."""

    def __init__(self, engine: statewf.Engine) -> None:
        self.engine = engine
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with durable.WorkflowEngine(self.engine, workflows=WORKFLOWS, poll_interval=0.1):
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Executor:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
