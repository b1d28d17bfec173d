"""Child process of the SIGKILL test: starts the ``ledger`` workflow and runs until killed.

Usage: python wf_kill_child.py URL SCHEMA|- LEDGER PAUSE_FILE
       python wf_kill_child.py nap URL SCHEMA|-   (start a sleeping run, then exit)
"""

from __future__ import annotations

import asyncio
import sys

import wf_flows

import durable
import statewf


async def nap(url: str, schema: str | None) -> None:
    """Start a run that sleeps, and leave (cleanly) as soon as it is waiting."""
    engine = statewf.Engine(url, schema=schema)
    # no scheduler here: this process must not wake the run itself
    async with durable.WorkflowEngine(
        engine, workflows=[wf_flows.napper], scheduler=False
    ) as workflows:
        run = await workflows.start_workflow("napper", run_id="napping-run")
        while engine.get(run.id).status != "waiting":
            await asyncio.sleep(0.01)
    engine.close()


async def main(url: str, schema: str | None, ledger: str, pause: str) -> None:
    engine = statewf.Engine(url, schema=schema)
    # a short lease: the test's next engine takes the run over soon after the kill
    async with durable.WorkflowEngine(engine, workflows=[wf_flows.ledger], lease=1.5) as workflows:
        run = await workflows.start_workflow(
            "ledger", {"ledger": ledger, "pause": pause}, run_id="killed-run"
        )
        await workflows.wait_for_run(run.id)


if __name__ == "__main__":
    if sys.argv[1] == "nap":
        asyncio.run(nap(sys.argv[2], None if sys.argv[3] == "-" else sys.argv[3]))
    else:
        url, schema, ledger, pause = sys.argv[1:5]
        asyncio.run(main(url, None if schema == "-" else schema, ledger, pause))
