"""Child process of the SIGKILL test: starts the ``ledger`` workflow and runs until killed.

Usage: python wf_kill_child.py URL SCHEMA|- LEDGER PAUSE_FILE
"""

from __future__ import annotations

import asyncio
import sys

import wf_flows

import durable
import statewf


async def main(url: str, schema: str | None, ledger: str, pause: str) -> None:
    engine = statewf.Engine(url, schema=schema)
    async with durable.WorkflowEngine(engine, workflows=[wf_flows.ledger]) as workflows:
        run = await workflows.start_workflow(
            "ledger", {"ledger": ledger, "pause": pause}, run_id="killed-run"
        )
        await workflows.wait_for_run(run.id)


if __name__ == "__main__":
    url, schema, ledger, pause = sys.argv[1:5]
    asyncio.run(main(url, None if schema == "-" else schema, ledger, pause))
