"""Workflows the run-diagram tests draw (in a file, so the step analysis can read them)."""

from __future__ import annotations

import asyncio
from typing import Any

import durable

FAST_RETRY = durable.RetryPolicy(retries=3, delay=0.01, jitter=0)
ATTEMPTS: dict[str, int] = {}
GATE: dict[str, asyncio.Event] = {}


def create_account(email: str) -> dict[str, str]:
    """A step that succeeds."""
    return {"id": "user-1", "email": email}


def send_welcome(email: str, n: int) -> str:
    """A step called in a loop."""
    return f"mail {n} to {email}"


def flaky(run_id: str) -> str:
    """Fails twice per run, then succeeds."""
    ATTEMPTS[run_id] = ATTEMPTS.get(run_id, 0) + 1
    if ATTEMPTS[run_id] < 3:
        raise ConnectionError("smtp is down")
    return "ok"


def explode() -> None:
    """Always fails."""
    raise ValueError('bad <data> "here"')


async def wait_for_gate(run_id: str) -> str:
    """Blocks until the test opens the gate of this run."""
    await GATE[run_id].wait()
    return "opened"


@durable.workflow("onboard-user", retry=FAST_RETRY)
async def onboard_user(ctx: durable.Context[dict[str, Any]]) -> dict[str, str]:
    """Account, three welcome mails, a flaky step, maybe a failing one, then finish."""
    user = await ctx.step.run("create-account", create_account, "a@example.com")
    for n in range(3):
        await ctx.step.run(f"send-welcome-{n}", send_welcome, "a@example.com", n)
    await ctx.step.run("flaky", flaky, ctx.run_id)
    if ctx.input.get("gate"):
        await ctx.step.run("wait-for-gate", wait_for_gate, ctx.run_id)
    if ctx.input.get("fail"):
        await ctx.step.run("explode", explode)
    await ctx.step.run("finish", send_welcome, "a@example.com", 99)
    return user
