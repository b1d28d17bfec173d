"""An app module for the worker tests: refs, their implementations and a side-effect ledger.

``statewf worker --app tests/workers/flow_app.py --queue q`` (or ``python -c`` with
``import flow_app``) serves these workflows. Every step appends ``<run id> <step key>``
to ``LEDGER`` (in-process tests) and, when ``FLOW_LEDGER`` names a directory, to a
file of this process there (subprocess tests), so a test can count how often each
step's side effect happened.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Any

from pydantic import BaseModel

import durable


class FlowInput(BaseModel):
    """Input of the test workflows: how long each step sleeps, and a free tag."""

    sleep: float = 0.0
    tag: str = ""


#: (run id, step key) of every step execution in this process
LEDGER: list[tuple[str, str]] = []

#: three literal steps: the plan's total is exact (3)
three = durable.ref("three-steps", input=FlowInput, queue="q")
#: one step, a wait for the event "go", one more step
gated = durable.ref("gated", input=FlowInput, queue="q")


def record(run_id: str, key: str) -> None:
    """Append one step execution to the ledger (memory, and a file when FLOW_LEDGER is set)."""
    LEDGER.append((run_id, key))
    folder = os.environ.get("FLOW_LEDGER")
    if folder:
        with open(os.path.join(folder, f"ledger-{os.getpid()}.txt"), "a") as f:
            f.write(f"{run_id} {key}\n")


async def effect(run_id: str, key: str, sleep: float) -> str:
    """A step: sleep a little, then record the side effect."""
    if sleep:
        await asyncio.sleep(sleep)
    record(run_id, key)
    return key


@three.implement()
async def three_impl(ctx: durable.Context[FlowInput]) -> dict[str, Any]:
    """Three steps in a row."""
    a = await ctx.step.run("one", effect, ctx.run_id, "one", ctx.input.sleep)
    b = await ctx.step.run("two", effect, ctx.run_id, "two", ctx.input.sleep)
    c = await ctx.step.run("three", effect, ctx.run_id, "three", ctx.input.sleep)
    return {"steps": [a, b, c], "tag": ctx.input.tag}


@gated.implement()
async def gated_impl(ctx: durable.Context[FlowInput]) -> dict[str, Any]:
    """A step, a wait for "go", a step that returns the event's data."""
    await ctx.step.run("before", effect, ctx.run_id, "before", ctx.input.sleep)
    data = await ctx.step.wait_for("go", event="go")
    await ctx.step.run("after", effect, ctx.run_id, "after", 0.0)
    return {"got": data}


# ---------------------------------------------------------------- helpers for the tests

#: log-row kinds that start an execution, and those that end it
STARTS = frozenset({"claim", "recover", "wake"})
ENDS = frozenset({"completed", "failed", "cancel", "dead_letter", "sleep", "wait", "pause", "poll"})


def intervals(records: list[Any]) -> list[tuple[Any, Any]]:
    """(start, end) times of each execution in one run's log: claim/recover/wake row to
    the next suspension or final row."""
    found = []
    start = None
    for rec in records:
        if rec.kind in STARTS and start is None:
            start = rec.created_at
        elif rec.kind in ENDS and start is not None:
            found.append((start, rec.created_at))
            start = None
    assert start is None, f"an execution never ended: {[r.kind for r in records]}"
    return found


def work_intervals(records: list[Any]) -> list[tuple[Any, Any]]:
    """(start, end) of each execution that ran a step: its first step's ``started_at``
    (taken after the claim committed) to its next suspension or final row.

    A sub-interval of the time the run was held, read from the step rows only.
    """
    found = []
    start = None
    executing = False
    for rec in records:
        if rec.kind in STARTS:
            executing, start = True, None
        elif executing and rec.kind == "step" and start is None:
            start = datetime.fromisoformat(rec.meta["started_at"])
        elif executing and rec.kind in ENDS:
            if start is not None:
                found.append((start, rec.created_at))
            executing, start = False, None
    return found


def max_overlap(spans: list[tuple[Any, Any]]) -> int:
    """Most intervals open at one instant (an end and a start at the same instant do not
    overlap)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:  # at equal times ends (-1) sort before starts (+1)
        now += step
        most = max(most, now)
    return most


class Running:
    """``async with Running(*workers):`` runs workers as tasks; stops them gracefully."""

    def __init__(self, *workers: durable.Worker) -> None:
        self.workers = workers
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Running:
        for w in self.workers:
            self.tasks.append(asyncio.create_task(w.run(install_signal_handlers=False)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.workers:
            w.request_stop()
        await asyncio.gather(*self.tasks)


def count_rows(engine: Any, table: str, **where: Any) -> int:
    """Rows of a statewf table (``instances``, ``transitions``, ``workers``) of an Engine."""
    from sqlalchemy import func, select

    with engine.store.transaction(readonly=True) as tx:
        t = getattr(tx.t, table)
        query = select(func.count()).select_from(t)
        for column, value in where.items():
            query = query.where(t.c[column] == value)
        return int(tx.conn.execute(query).scalar_one())


def held(engine: Any, queue: str | None = None) -> list[dict[str, Any]]:
    """Instances under a lease now (id, queue, resource_id, lease_owner)."""
    from sqlalchemy import select

    with engine.store.transaction(readonly=True) as tx:
        c = tx.t.instances.c
        query = select(c.id, c.queue, c.resource_id, c.lease_owner).where(
            c.lease_owner.is_not(None)
        )
        if queue is not None:
            query = query.where(c.queue == queue)
        return [dict(r._mapping) for r in tx.conn.execute(query)]


async def wait_until(predicate: Any, timeout: float = 20.0, every: float = 0.02) -> None:
    """Poll an async predicate until it is true; AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(every)
