"""The subscription lifecycle of the ai-workflows seed: activate, a 30-day trial,
a reminder, then wait up to 7 days for a renewal event, or expire.

Run it: ``python examples/subscription.py``. The run sleeps for 30 days and waits
for 7 more without holding anything in memory: each wait is a row with a wake-up
time. A manual clock stands in for the calendar, so the 37 days pass in a blink;
with the wall clock, the same code waits for real and survives restarts meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

import durable
import statewf
from statewf.testing import ManualClock

EMAILS: list[str] = []


class Subscription(BaseModel):
    """Who subscribed to what."""

    customer: str
    plan: str


class Renewal(BaseModel):
    """The data of the ``subscription.renewed`` event."""

    months: int


def activate(sub: dict[str, Any]) -> str:
    EMAILS.append(f"welcome {sub['customer']} to {sub['plan']}")
    return "active"


def send_reminder(sub: dict[str, Any]) -> str:
    EMAILS.append(f"reminder to {sub['customer']}: your trial ends soon")
    return "reminded"


def expire(sub: dict[str, Any]) -> str:
    EMAILS.append(f"{sub['customer']}'s subscription expired")
    return "expired"


@durable.workflow("subscription-lifecycle", input=Subscription)
async def subscription(ctx: durable.Context[Subscription]) -> dict[str, Any]:
    """Activate, sleep through the trial, remind, then wait for a renewal."""
    sub = ctx.input.model_dump()
    await ctx.step.run("activate", activate, sub)
    await ctx.step.sleep("trial", "30 days")
    await ctx.step.run("remind", send_reminder, sub)
    renewed = await ctx.step.wait_for(
        "renewal", event="subscription.renewed", timeout="7 days", schema=Renewal
    )
    if renewed is None:
        await ctx.step.run("expire", expire, sub)
        return {"customer": sub["customer"], "status": "expired"}
    return {"customer": sub["customer"], "status": "renewed", "months": renewed.months}


async def until_waiting(engine: durable.WorkflowEngine, run_id: str, key: str) -> None:
    """Poll until the run waits at step ``key`` (a demo helper)."""
    while (engine.engine.get(run_id).context.get("waiting") or {}).get("key") != key:
        await asyncio.sleep(0.01)


async def main() -> None:
    url = os.environ.get("STATEWF_DATABASE_URL") or (
        f"sqlite:///{tempfile.mkdtemp(prefix='statewf-')}/subscription.db"
    )
    clock = ManualClock()
    store = statewf.Engine(url, clock=clock)
    async with durable.WorkflowEngine(
        store, workflows=[subscription], poll_interval=0.05
    ) as engine:
        alice = await engine.start_workflow(subscription, {"customer": "alice", "plan": "pro"})
        bob = await engine.start_workflow(subscription, {"customer": "bob", "plan": "team"})
        await until_waiting(engine, alice.id, "trial")
        await until_waiting(engine, bob.id, "trial")
        run = await engine.get_run(alice.id)
        print(f"day 0: alice's run is {run.status} until {store.get(alice.id).wake_at:%Y-%m-%d}")

        clock.advance(timedelta(days=30))
        await until_waiting(engine, alice.id, "renewal")
        await until_waiting(engine, bob.id, "renewal")
        print("day 30: both reminded, both waiting for subscription.renewed")

        await engine.trigger_event(alice.id, "subscription.renewed", {"months": 12})
        print(f"day 30: alice renewed -> {await engine.result(alice.id, timeout=10)}")

        clock.advance(timedelta(days=7))
        print(f"day 37: bob never renewed -> {await engine.result(bob.id, timeout=10)}")
        print("emails:", *EMAILS, sep="\n  ")
        print("bob's log:")
        for row in store.history(bob.id):
            wake = f" wake_at={row.wake_at:%Y-%m-%d}" if row.wake_at else ""
            print(f"  {row.seq:>2} {row.kind:<9} {row.key or '':<9} {row.status}{wake}")
    store.close()


if __name__ == "__main__":
    asyncio.run(main())
