"""The onboarding workflow from the pg-workflows seed, as a statewf durable workflow.

Run it: ``python examples/onboarding.py`` (SQLite in a temporary directory, or the
database in ``STATEWF_DATABASE_URL``). It shows input validation, idempotent starts,
a retried step, a step per item, progress and the step timeline of the run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from pydantic import BaseModel, Field

import durable
import statewf

ACCOUNTS: dict[str, dict[str, str]] = {}
OUTBOX: list[str] = []
_email_attempts = 0


class Signup(BaseModel):
    """The input of the workflow: validated before a run is created."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    plan: str = "free"


def create_account(email: str) -> dict[str, str]:
    """Create the user (a dict stands in for the application's database)."""
    user = {"id": f"user-{len(ACCOUNTS) + 1}", "email": email}
    ACCOUNTS[user["id"]] = user
    return user


def send_email(address: str, subject: str) -> str:
    """A flaky email API: the first call times out, the retry gets through."""
    global _email_attempts
    _email_attempts += 1
    step = durable.current_step()
    if _email_attempts == 1:
        raise TimeoutError("SMTP relay timed out")
    key = step.idempotency_key if step else "-"
    OUTBOX.append(f"to={address} subject={subject!r} idempotency-key={key}")
    return "sent"


def list_items(plan: str) -> list[str]:
    """What to set up for the user's plan."""
    return ["profile", "workspace"] + (["billing"] if plan != "free" else [])


def process(item: str) -> str:
    """Set up one item."""
    return f"{item} ready"


@durable.workflow("onboard-user", input=Signup, retries=3, retry_delay=0.05, timeout="1h")
async def onboard_user(ctx: durable.Context[Signup]) -> dict[str, Any]:
    """Create the account, welcome the user, then set up each item of their plan."""
    user = await ctx.step.run("create-account", create_account, ctx.input.email)
    await ctx.step.run("send-welcome", send_email, user["email"], "Welcome!", retries=5)
    done = []
    for item in await ctx.step.run("get-items", list_items, ctx.input.plan):
        done.append(await ctx.step.run(f"process-{item}", process, item))
    return {"user_id": user["id"], "set_up": done}


async def main() -> None:
    url = os.environ.get("STATEWF_DATABASE_URL") or (
        f"sqlite:///{tempfile.mkdtemp(prefix='statewf-')}/onboarding.db"
    )
    async with durable.WorkflowEngine(url, workflows=[onboard_user]) as engine:
        try:
            await engine.start_workflow("onboard-user", {"email": "not an email"})
        except statewf.InvalidInput as exc:
            print(f"rejected, no run created: {exc.message[:70]}...")

        run = await engine.start_workflow(
            "onboard-user",
            {"email": "alice@example.com", "plan": "pro"},
            resource_id="user-123",
            idempotency_key="onboard:user-123",
        )
        again = await engine.start_workflow(
            "onboard-user",
            {"email": "alice@example.com", "plan": "pro"},
            resource_id="user-123",
            idempotency_key="onboard:user-123",
        )
        print(
            f"started run {run.id}; a second start with the same key "
            f"returned the same run: {again.id == run.id}"
        )

        output = await engine.result(run.id, resource_id="user-123")
        print(f"output: {output}")
        progress = await engine.check_progress(run.id)
        print(
            f"progress: {progress.completed_steps}/{progress.total_steps} steps, "
            f"{progress.completion_percentage:.0f}% "
            f"(total approximate: {progress.approximate}, because of the item loop)"
        )
        print("timeline:")
        for step in await engine.get_timeline(run.id):
            errors = [f"{a.error.type}" for a in step.attempts if a.error]
            retried = f"  (retried after {', '.join(errors)})" if errors else ""
            print(f"  {step.position}. {step.key:<18} {step.status:<9} -> {step.result}{retried}")
        print(f"emails sent: {OUTBOX}")
        runs = await engine.get_runs(resource_id="user-123")
        print(f"runs of user-123: {[(r.id[:8], r.status) for r in runs.items]}")


if __name__ == "__main__":
    asyncio.run(main())
