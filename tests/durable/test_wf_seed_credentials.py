"""Per-worker credentials: ``Worker(..., credentials=...)``, read with
``durable.credentials()`` / ``ctx.credentials``, never in the log or in log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from wf_flows import Make

import durable
import statewf
from durable.observe import configure_logging

SECRET = "sk-live-0123456789-do-not-log"


@dataclass(frozen=True)
class Settings:
    api_key: str
    region: str


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """Every durable/statewf log line, at debug level, into a buffer."""
    loggers = [logging.getLogger(name) for name in ("durable", "statewf")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    buffer = io.StringIO()
    configure_logging(stream=buffer, level="debug")
    yield buffer
    for lg, handlers, level in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)


def call_api() -> dict[str, Any]:
    """A sync step (it runs in a thread): the credentials follow it there."""
    creds = durable.credentials()
    try:
        creds["api_key"] = "changed"
        writable = True
    except TypeError:
        writable = False
    return {"key_length": len(creds["api_key"]), "writable": writable}


@durable.workflow("uses-credentials")
async def uses_credentials(ctx: durable.Context[None]) -> dict[str, Any]:
    ctx.logger.info("calling the API in %s", ctx.credentials["region"])
    called = await ctx.step.run("call", call_api)

    async def region() -> str:
        return str(durable.credentials()["region"])

    called["region"] = await ctx.step.run("region", region)
    return called


def test_engine_credentials_reach_steps_and_never_the_log_nor_log_lines(
    make_engine: Make, out: io.StringIO
) -> None:
    creds = {"api_key": SECRET, "region": "eu-west"}

    async def main() -> str:
        assert durable.credentials() is None  # outside any run
        async with make_engine(workflows=[uses_credentials], credentials=creds) as engine:
            run = await engine.start_workflow(uses_credentials)
            result = await engine.result(run.id, timeout=10)
            assert result == {"key_length": len(SECRET), "writable": False, "region": "eu-west"}
            rows = [r.model_dump(mode="json") for r in engine.engine.history(run.id)]
            assert SECRET not in json.dumps(rows)
            assert SECRET not in json.dumps(engine.engine.get(run.id).model_dump(mode="json"))
            assert SECRET not in repr(engine.executor.host)
        assert durable.credentials() is None  # nothing leaks into the caller's context
        return run.id

    run_id = asyncio.run(main())
    assert creds["api_key"] == SECRET  # the step's write went to a read-only copy
    logged = out.getvalue()
    assert f'"run_id": "{run_id}"' in logged  # the run did log (at debug level)
    assert "calling the API in eu-west" in logged
    assert SECRET not in logged


@durable.workflow("which-worker")
async def which_worker(ctx: durable.Context[None]) -> str:
    return await ctx.step.run("who", lambda: durable.credentials().region)


def test_each_worker_gives_its_own_runs_its_own_settings(db: dict[str, str | None]) -> None:
    async def main() -> None:
        engines = [statewf.Engine(db["url"], schema=db["schema"]) for _ in range(3)]
        workers = [
            durable.Worker(
                engines[i],
                workflows=[which_worker],
                credentials=Settings(api_key=SECRET, region=region),
                queues=[f"q-{region}"],
                poll_interval=0.05,
                shutdown_timeout=5.0,
            )
            for i, region in enumerate(("eu", "us"))
        ]
        tasks = [asyncio.create_task(w.run(install_signal_handlers=False)) for w in workers]
        try:
            async with durable.Client(engines[2]) as client:
                eu = await client.start_workflow(which_worker, queue="q-eu")
                us = await client.start_workflow(which_worker, queue="q-us")
                assert (await client.wait_for_run(eu.id, timeout=20)).output == "eu"
                assert (await client.wait_for_run(us.id, timeout=20)).output == "us"
                for run in (eu, us):
                    rows = [r.model_dump(mode="json") for r in engines[2].history(run.id)]
                    assert SECRET not in json.dumps(rows)
        finally:
            for w in workers:
                w.request_stop()
            await asyncio.gather(*tasks)
            for engine in engines:
                engine.close()

    asyncio.run(main())
