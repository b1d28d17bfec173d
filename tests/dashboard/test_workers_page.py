"""The workers page with a real worker holding a lease: queues, labels, held runs, per tenant."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import durable
from statewf import browse
from tests.dashboard.conftest import Clients
from tests.dashboard.seed import World, until

RELEASE = threading.Event()


def _hold() -> str:
    RELEASE.wait(30)
    return "done"


@durable.workflow("slow")
async def slow(ctx: durable.Context[None]) -> str:
    """One step that lasts until the test lets it go."""
    return await ctx.step.run("hold", _hold)


def test_a_live_worker_its_queues_labels_and_leases(world: World, as_user: Clients) -> None:
    RELEASE.clear()
    worker = durable.Worker(
        world.engine,
        workflows=[slow],
        queues=["default", "billing"],
        labels={"region": "eu"},
        poll_interval=0.1,
        worker_id="worker-eu-1",
    )
    loop: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            loop["loop"] = asyncio.get_running_loop()
            await worker.run(install_signal_handlers=False)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:

        async def start() -> str:
            async with durable.Client(world.engine) as client:
                run = await client.start_workflow(slow, resource_id="acme", queue="billing")
                return run.id

        run_id = asyncio.run(start())
        until(
            lambda: browse.routes(world.engine, [run_id])[run_id]["lease_owner"] == "worker-eu-1",
            "the worker to hold the run",
        )
        page = as_user("alice").get("/workers").text
        assert "worker-eu-1" in page
        assert "default, billing" in page
        assert "region=eu" in page
        assert run_id in page  # its lease, with the run it holds
        assert "<code>slow@1</code>" in page  # what it serves
        unserved = page[page.index('id="unserved-rows"') :]
        assert world.ids["waiting"] in unserved  # refund@1: no live worker serves it
        assert world.ids["globex_waiting"] not in unserved  # another tenant's run
        assert run_id not in unserved  # slow@1 is served
        other = as_user("gina").get("/workers").text
        assert "worker-eu-1" in other  # workers belong to no tenant
        assert run_id not in other  # but acme's run is not shown to globex
        assert world.ids["globex_waiting"] in other[other.index('id="unserved-rows"') :]
    finally:
        RELEASE.set()
        if "loop" in loop:
            loop["loop"].call_soon_threadsafe(worker.request_stop)
        thread.join(30)
