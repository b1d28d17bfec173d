"""Workflows shared by the durable tests (and the SIGKILL subprocess, which imports this file).

Step functions count their calls in ``CALLS`` so tests can prove that a recorded
step never runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import durable
import statewf

CALLS: Counter[str] = Counter()


class Crash(BaseException):
    """A simulated process death: no ``except Exception`` catches it, the engine writes nothing."""


class Order(BaseModel):
    """Input of the ``pipeline-5`` workflow."""

    order_id: str
    items: list[str]


class Receipt(BaseModel):
    """A pydantic step result, round-tripped through the log."""

    order_id: str
    total: int


def counted(name: str, value: Any) -> Callable[..., Any]:
    """A sync step function that counts its calls and returns ``value``."""

    def step(*_args: Any) -> Any:
        CALLS[name] += 1
        return value

    step.__name__ = name
    return step


async def charge(order_id: str, items: list[str]) -> Receipt:
    """An async step returning a model."""
    CALLS["charge"] += 1
    await asyncio.sleep(0)
    return Receipt(order_id=order_id, total=10 * len(items))


@durable.workflow("pipeline-5", input=Order)
async def pipeline5(ctx: durable.Context[Order]) -> dict[str, Any]:
    """Five sequential steps, a parallel pair, a model result; 8 steps in all."""
    checked = await ctx.step.run("validate", counted("validate", {"ok": True}))
    receipt = await ctx.step.run("charge", charge, ctx.input.order_id, ctx.input.items)
    packed = []
    for item in ctx.input.items:
        packed.append(await ctx.step.run(f"pack-{item}", counted(f"pack-{item}", item.upper())))
    a, b = await ctx.gather(
        ctx.step.run("notify-email", counted("notify-email", "sent")),
        ctx.step.run("notify-sms", counted("notify-sms", "queued")),
    )
    done = await ctx.step.run("ship", counted("ship", "shipped"))
    return {
        "ok": checked["ok"],
        "total": receipt.total,
        "receipt_type": type(receipt).__name__,
        "packed": packed,
        "notified": [a, b],
        "done": done,
    }


ORDER = {"order_id": "o-1", "items": ["a", "b", "c"]}
EXPECTED_OUTPUT = {
    "ok": True,
    "total": 30,
    "receipt_type": "Receipt",
    "packed": ["A", "B", "C"],
    "notified": ["sent", "queued"],
    "done": "shipped",
}
STEP_KEYS = [
    "validate",
    "charge",
    "pack-a",
    "pack-b",
    "pack-c",
    "notify-email",
    "notify-sms",
    "ship",
]


@contextlib.contextmanager
def crash_at_write(n: int, *, after_commit: bool) -> Iterator[list[int]]:
    """Make the ``n``-th run write (1-based) of any executor raise :class:`Crash`.

    Before the commit (the row is not written) or right after it (the row is).
    Yields a one-element list with the number of writes seen so far.
    """
    from durable.execution import runner

    original = runner.RunExecutor._write_once
    seen = [0]

    async def write(self: runner.RunExecutor, make: Any, needs_tx: bool) -> statewf.Instance:
        seen[0] += 1
        if seen[0] == n and not after_commit:
            raise Crash(f"crash before write {n}")
        result = await original(self, make, needs_tx)
        if seen[0] == n and after_commit:
            raise Crash(f"crash after write {n}")
        return result

    runner.RunExecutor._write_once = write  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        runner.RunExecutor._write_once = original  # type: ignore[method-assign]


def ledger_step(path: str, name: str, pause_file: str | None = None) -> Callable[[], str]:
    """A step that appends its name to a ledger file (and may block while a file exists)."""

    def step() -> str:
        with open(path, "a") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if pause_file is not None:
            while Path(pause_file).exists():
                import time

                time.sleep(0.01)
        return name

    return step


@durable.workflow("ledger")
async def ledger(ctx: durable.Context[dict[str, Any]]) -> list[str]:
    """Five steps that append to ``ctx.input["ledger"]``; step 3 blocks while a file exists."""
    out = []
    for i in range(1, 6):
        pause = ctx.input["pause"] if i == 3 else None
        out.append(
            await ctx.step.run(f"step-{i}", ledger_step(ctx.input["ledger"], f"step-{i}", pause))
        )
    return out


@durable.workflow("napper")
async def napper(ctx: durable.Context[None]) -> str:
    """Sleeps half a second of wall-clock time, then runs one step."""
    await ctx.step.sleep("nap", 0.5)
    return await ctx.step.run("after-nap", counted("after-nap", "rested"))


def _op(key: str) -> str:
    CALLS[key] += 1
    return key


Ops = list[tuple[str, str]]


def generated(
    *,
    edit: Callable[[Ops], Ops] | None = None,
    patch_at: int | None = None,
    version: str = "1",
) -> durable.Workflow[Any, list[str]]:
    """Workflow ``gen`` that runs ``ctx.input["ops"]`` in order: ``("run", key)`` is a step,
    ``("sleep", key)`` an hour's sleep. ``edit`` changes the ops the code asks for (a
    removed or reordered step); ``patch_at`` puts ``if ctx.patched("extra")`` (a step
    ``extra``) before that op (``len(ops)``: after the last)."""

    @durable.workflow("gen", version=version)
    async def gen(ctx: durable.Context[Any]) -> list[str]:
        recorded: Ops = [(str(k), str(n)) for k, n in ctx.input["ops"]]
        ops = edit(recorded) if edit is not None else recorded
        out: list[str] = []
        for index in range(len(ops) + 1):
            if index == patch_at and ctx.patched("extra"):
                out.append(await ctx.step.run("extra", _op, "extra"))
            if index == len(ops):
                break
            kind, key = ops[index]
            if kind == "run":
                out.append(await ctx.step.run(key, _op, key))
            else:
                await ctx.step.sleep(key, 3600)
        return out

    return gen


# ------------------------------------------------------------ helpers shared by the tests

Make = Callable[..., durable.WorkflowEngine]


async def until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Wait (a few ms at a time) until ``condition()`` holds; fail naming ``what``."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def kinds(engine: durable.WorkflowEngine, run_id: str) -> list[str]:
    """The kinds of a run's log rows, in order."""
    return [r.kind for r in engine.engine.history(run_id)]
