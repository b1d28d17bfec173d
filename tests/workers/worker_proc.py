"""A worker process for the crash tests: ``durable.Worker`` serving the workflows below.

Usage::

    python tests/workers/worker_proc.py --url URL --schema SCHEMA --name NAME \
        [--queues default,q:4] [--concurrency 4] [--lease 1.5] [--poll 0.3] \
        [--crash-limit 3] [--shutdown-timeout 5]

Its worker id is ``"<name>:<pid>"`` (or ``--worker-id``). It logs (INFO, with times) to
stderr and runs until SIGTERM/SIGINT (graceful stop, exit 0) or until it is killed.

Every step appends ``(run id, step key, pid, kind)`` to ``<schema>.ledger``:

* a *plain* step (``kind = "plain"``) inserts with its own autocommitted psycopg
  connection, separately from the log: at least once;
* a *transactional* step (``kind = "tx"``) inserts through the connection of the
  step's log row (``ctx.step.transaction``): committed with the row, exactly once.

Each step returns this process's pid, so a step row's result tells which process
recorded it. Tests import the refs (``steps``, ``slow``, ``crasher``) to start runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

import psycopg
import sqlalchemy as sa
from pydantic import BaseModel

import durable
import statewf


class StepsInput(BaseModel):
    """``steps`` steps ``s0``.. ; every ``tx_every``-th (s2, s5, ...) is transactional.

    ``pause``: seconds a plain step sleeps after its ledger insert (widens the window
    between a step's effect and its commit). ``slow_step``/``slow_seconds``: that
    step sleeps that long (after its ledger insert).
    """

    steps: int = 10
    tx_every: int = 3
    pause: float = 0.0
    slow_step: int = -1
    slow_seconds: float = 0.0


steps = durable.ref("ledger-steps", input=StepsInput)
#: the same workflow on queue "slow" (the fencing and shutdown tests)
slow = durable.ref("ledger-steps-slow", input=StepsInput, queue="slow")
#: a step that SIGKILLs its own process on every attempt
crasher = durable.ref("crasher", queue="crash")
#: a step that raises a BaseException on every attempt: ``{"kind": "exit" | "interrupt"
#: | "custom"}`` (SystemExit, KeyboardInterrupt, a BaseException subclass)
raiser = durable.ref("raiser", queue="raise")

SCHEMA = os.environ.get("WORKER_PROC_SCHEMA", "public")
LEDGER_URL = ""


class _Connections:
    """A tiny pool of autocommit psycopg connections for the plain steps' ledger writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[psycopg.Connection[Any]] = []

    def insert(self, run_id: str, key: str) -> None:
        with self._lock:
            conn = self._free.pop() if self._free else None
        if conn is None:
            conn = psycopg.connect(LEDGER_URL, autocommit=True, connect_timeout=5)
        try:
            conn.execute(
                f'insert into "{SCHEMA}".ledger (run_id, step, pid, kind) '
                "values (%s, %s, %s, 'plain')",
                (run_id, key, os.getpid()),
            )
        except BaseException:
            conn.close()  # the server may have restarted: a new connection next time
            raise
        with self._lock:
            self._free.append(conn)


_POOL = _Connections()


def plain_step(run_id: str, key: str, pause: float) -> int:
    _POOL.insert(run_id, key)
    if pause:
        time.sleep(pause)
    return os.getpid()


def tx_step(conn: sa.Connection, run_id: str, key: str) -> int:
    conn.execute(
        sa.text(
            f'insert into "{SCHEMA}".ledger (run_id, step, pid, kind) '
            "values (:run_id, :step, :pid, 'tx')"
        ),
        {"run_id": run_id, "step": key, "pid": os.getpid()},
    )
    return os.getpid()


async def run_steps(ctx: durable.Context[StepsInput]) -> list[int]:
    spec = ctx.input
    pids: list[int] = []
    for i in range(spec.steps):
        key = f"s{i}"
        if spec.tx_every and i % spec.tx_every == spec.tx_every - 1:
            pids.append(await ctx.step.transaction(key, tx_step, ctx.run_id, key))
        else:
            pause = spec.slow_seconds if i == spec.slow_step else spec.pause
            pids.append(await ctx.step.run(key, plain_step, ctx.run_id, key, pause))
    return pids


def suicide(run_id: str) -> None:
    _POOL.insert(run_id, "boom")
    os.kill(os.getpid(), signal.SIGKILL)


async def crash(ctx: durable.Context[Any]) -> str:
    await ctx.step.run("before", plain_step, ctx.run_id, "before", 0.0)
    await ctx.step.run("boom", suicide, ctx.run_id)
    return "unreachable"


class Doom(BaseException):
    """Not an Exception: like a signal a library raises from deep inside a step."""


def raise_base(run_id: str, kind: str) -> None:
    _POOL.insert(run_id, "raise")
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    raise Doom("the step raised a BaseException")


async def raising(ctx: durable.Context[Any]) -> str:
    await ctx.step.run("raise", raise_base, ctx.run_id, ctx.input["kind"])
    return "unreachable"


WORKFLOWS = [
    raiser.implement(raising),
    steps.implement(run_steps, retries=8, retry_delay=0.5),
    slow.implement(run_steps, retries=8, retry_delay=0.5),
    crasher.implement(crash),
]


def _queues(text: str) -> list[str | durable.Queue]:
    out: list[str | durable.Queue] = []
    for item in text.split(","):
        name, _, limit = item.partition(":")
        out.append(durable.Queue(name, int(limit)) if limit else name)
    return out


def _server_full(exc: BaseException) -> bool:
    return isinstance(exc, statewf.StoreError) and "too many clients" in str(exc)


async def main(args: argparse.Namespace) -> None:
    # The test server is shared with other test runs: when it is momentarily full at
    # start-up, wait and start again instead of exiting (a supervisor would restart us).
    deadline = time.monotonic() + 30
    while True:
        engine: statewf.Engine | None = None
        worker: durable.Worker | None = None
        try:
            # a small pool: the server's connections are shared
            engine = statewf.Engine(args.url, schema=args.schema, pool_size=4)
            worker = durable.Worker(
                engine,
                workflows=WORKFLOWS,
                queues=_queues(args.queues),
                concurrency=args.concurrency,
                lease=args.lease,
                poll_interval=args.poll,
                crash_limit=args.crash_limit,
                shutdown_timeout=args.shutdown_timeout,
                worker_id=args.worker_id or f"{args.name}:{os.getpid()}",
            )
            await worker.run()
            return
        except Exception as exc:
            started = worker is not None and worker._registered
            if started or not _server_full(exc) or time.monotonic() > deadline:
                raise
            logging.getLogger("worker_proc").warning("server full at start-up; again soon")
            if worker is not None:
                await worker.close()
            await asyncio.sleep(0.5)
        finally:
            if engine is not None:
                engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--queues", default="default")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--poll", type=float, default=0.3)
    parser.add_argument("--crash-limit", type=int, default=3)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--worker-id", default=None)
    parsed = parser.parse_args()
    SCHEMA = parsed.schema
    LEDGER_URL = (
        sa.engine.make_url(parsed.url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main(parsed))
