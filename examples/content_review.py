"""The human-in-the-loop AI content pipeline of the pg-workflows seed, with a fake LLM.

A draft is written by a (fake, deterministic) LLM, then the run waits for a human
reviewer through an approval step. The wait costs nothing: the run is a row until
the reviewer answers. An approval publishes the draft; a rejection feeds the
reviewer's reason back to the LLM for a revision, and the revision goes back for
review. Who decided, and why, is recorded in the run's log.

Run it: ``python examples/content_review.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from pydantic import BaseModel

import durable

LLM_CALLS: list[str] = []


class Brief(BaseModel):
    """What to write about."""

    topic: str


def llm(prompt: str) -> str:
    """A fake LLM: deterministic text derived from the prompt."""
    LLM_CALLS.append(prompt)
    return f"<text for {prompt[:60]!r}>"


@durable.workflow("ai-content-pipeline", input=Brief, retries=3, retry_delay=0.05)
async def content_pipeline(ctx: durable.Context[Brief]) -> dict[str, Any]:
    """Draft, then review until approved (at most three rounds)."""
    draft = await ctx.step.run("generate-draft", llm, f"Write a blog post about: {ctx.input.topic}")
    for round_ in range(1, 4):
        review = await ctx.step.approval(f"human-review-{round_}", timeout="7 days")
        if review.approved:
            return {
                "status": "published",
                "rounds": round_,
                "content": draft,
                "by": review.reviewer,
            }
        draft = await ctx.step.run(
            f"revise-draft-{round_}", llm, f"Revise: {draft} -- feedback: {review.reason}"
        )
    return {"status": "abandoned", "rounds": 3}


async def main() -> None:
    url = os.environ.get("STATEWF_DATABASE_URL") or (
        f"sqlite:///{tempfile.mkdtemp(prefix='statewf-')}/content.db"
    )
    async with durable.WorkflowEngine(url, workflows=[content_pipeline]) as engine:
        run = await engine.start_workflow(content_pipeline, {"topic": "durable execution"})

        seen: set[str] = set()

        async def reviewer_sees() -> str:
            while True:  # a review UI would list runs waiting for a new approval
                waiting = (engine.engine.get(run.id).context.get("waiting") or {}).get("key")
                if waiting and waiting.startswith("human-review") and waiting not in seen:
                    seen.add(waiting)
                    return str(waiting)
                await asyncio.sleep(0.01)

        print(
            f"waiting for {await reviewer_sees()} (status {(await engine.get_run(run.id)).status})"
        )
        await engine.reject(
            run.id, reviewer="editor@acme.com", reason="make the intro more engaging"
        )
        print("rejected once: the LLM revises the draft")
        print(f"waiting for {await reviewer_sees()}")
        await engine.approve(run.id, reviewer="editor@acme.com", comment="ship it")
        output = await engine.result(run.id, timeout=10)
        print(f"output: {output}")
        print(f"LLM calls: {len(LLM_CALLS)} (one draft, one revision)")
        decisions = [r for r in engine.engine.history(run.id) if r.kind == "event"]
        for row in decisions:
            p = row.payload
            verdict = "approved" if p["approved"] else "rejected"
            print(f"  log row {row.seq}: {row.event} {verdict} by {p['reviewer']}: {p['reason']}")


if __name__ == "__main__":
    asyncio.run(main())
