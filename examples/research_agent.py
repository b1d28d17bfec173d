"""The multi-step AI research agent of the pg-workflows seed, with a fake LLM.

The fake LLM is deterministic but flaky: each prompt fails with a rate-limit error
the first time or two it is asked, so steps are retried with backoff. Every LLM
call is appended to a call log shared across processes.

The script first runs the agent in a child process that dies abruptly (``os._exit``,
like a kill -9) while task 4 of 5 is in flight. It then starts a new engine on the
same database, which resumes the run: the plan and tasks 1-3 come from the log,
and only task 4 onwards call the LLM again.

Run it: ``python examples/research_agent.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import durable


class Topic(BaseModel):
    """The agent's input."""

    topic: str


class Plan(BaseModel):
    """The plan the LLM makes: five research tasks."""

    tasks: list[dict[str, str]]


class RateLimited(Exception):
    """What the fake LLM raises the first times a prompt is seen (HTTP 429)."""


CALL_LOG = Path(os.environ.get("AGENT_CALL_LOG", "agent-calls.jsonl"))
CRASH_AT_TASK = os.environ.get("AGENT_CRASH_AT_TASK")


def llm(prompt: str) -> str:
    """A fake, deterministic LLM: fails 0-2 times per prompt, then answers."""
    seen = (
        [json.loads(line) for line in CALL_LOG.read_text().splitlines()]
        if CALL_LOG.exists()
        else []
    )
    tries = sum(1 for c in seen if c["prompt"] == prompt)
    failures = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 3
    ok = tries >= failures
    with CALL_LOG.open("a") as fh:
        fh.write(json.dumps({"prompt": prompt, "ok": ok, "pid": os.getpid()}) + "\n")
    if not ok:
        raise RateLimited(f"429 Too Many Requests (prompt {prompt[:30]!r})")
    if CRASH_AT_TASK and prompt.startswith(f"Research task {CRASH_AT_TASK}:"):
        print(f"  [child] crashing while task {CRASH_AT_TASK} is in flight", flush=True)
        os._exit(137)  # the process dies: no cleanup, no final log row
    return f"answer to <{prompt[:48]}>"


def create_plan(topic: str) -> Plan:
    """Step 1: ask the LLM for a plan (parsed into five tasks)."""
    llm(f"Create a research plan for: {topic}")
    return Plan(
        tasks=[{"id": str(i), "description": f"aspect {i} of {topic}"} for i in range(1, 6)]
    )


def research(task: dict[str, str]) -> str:
    """Step 2: one research task."""
    return llm(f"Research task {task['id']}: {task['description']}")


def synthesize(findings: list[str]) -> str:
    """Step 3: the report."""
    return llm(f"Synthesize {len(findings)} findings: " + " | ".join(f[:20] for f in findings))


@durable.workflow("research-agent", input=Topic, retries=3, retry_delay=0.02, timeout="30 minutes")
async def research_agent(ctx: durable.Context[Topic]) -> dict[str, Any]:
    """Plan, research each task durably, then synthesize."""
    plan = await ctx.step.run("create-plan", create_plan, ctx.input.topic)
    findings = []
    for task in plan.tasks:
        findings.append(await ctx.step.run(f"research-{task['id']}", research, task))
    report = await ctx.step.run("synthesize", synthesize, findings)
    return {"tasks": len(plan.tasks), "findings": findings, "report": report}


# How long a run stays held by an engine that stopped heart-beating. The default (30 s)
# suits production; this demo uses a short lease so the restart below takes over soon.
LEASE_SECONDS = 3.0


async def child(url: str, run_id: str) -> None:
    """Start the run and work on it until the simulated crash."""
    async with durable.WorkflowEngine(
        url, workflows=[research_agent], lease=LEASE_SECONDS
    ) as engine:
        run = await engine.start_workflow(
            "research-agent", {"topic": "durable execution"}, run_id=run_id
        )
        await engine.wait_for_run(run.id)


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="statewf-agent-"))
    url = os.environ.get("STATEWF_DATABASE_URL") or f"sqlite:///{workdir}/agent.db"
    call_log = workdir / "calls.jsonl"
    run_id = f"agent-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "AGENT_CALL_LOG": str(call_log), "AGENT_CRASH_AT_TASK": "4"}
    print("1) running the agent in a child process that will crash at task 4")
    code = subprocess.run(
        [sys.executable, __file__, "--child", url, run_id], env=env, check=False
    ).returncode
    print(f"   child exited with status {code}")
    before = [json.loads(line) for line in call_log.read_text().splitlines()]

    print("2) a new engine on the same database resumes the run")
    print(
        f"   (it first waits up to {LEASE_SECONDS:g} s for the crashed process's lease to "
        "expire, so that two processes never execute the run at once)",
        flush=True,
    )
    os.environ["AGENT_CALL_LOG"] = str(call_log)
    global CALL_LOG
    CALL_LOG = call_log
    async with durable.WorkflowEngine(
        url, workflows=[research_agent], lease=LEASE_SECONDS
    ) as engine:
        run = await engine.wait_for_run(run_id, timeout=60)
        print(f"   status: {run.status}; report: {run.output['report']}")
        timeline = await engine.get_timeline(run.id)
    after = [json.loads(line) for line in call_log.read_text().splitlines()][len(before) :]

    def asked(calls: list[dict[str, Any]]) -> Counter[str]:
        return Counter(c["prompt"].split(":")[0] for c in calls)

    print(f"   LLM calls before the crash: {dict(asked(before))}")
    print(f"   LLM calls after the restart: {dict(asked(after))}")
    resumed = sorted({c["prompt"].split(":")[0] for c in after})
    assert not any(
        p.startswith(("Create a research plan", *[f"Research task {i}" for i in (1, 2, 3)]))
        for p in resumed
    )
    retries = sum(len(s.attempts) - 1 for s in timeline)
    print(
        "   resumed at task 4: the plan and tasks 1-3 were not asked again; "
        f"{retries} retried attempt(s) are in the log"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main())
