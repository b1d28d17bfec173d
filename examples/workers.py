"""A client that holds no workflow code, and two workers that execute its runs.

In production the three parts are three services (an API, and worker processes
started with ``statewf worker --app ...``) on one PostgreSQL database; here they
share one process and the SQLite default so the example runs anywhere::

    python examples/workers.py
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import durable

# --- refs.py: what the API service imports (no handler code) -------------------


class Report(BaseModel):
    customer: str
    pages: int


render = durable.ref("render-report", input=Report, queue="reports")
transcode = durable.ref("transcode-video", input=Report, queue="reports", labels={"gpu": "true"})


# --- worker_service.py: the code, run by workers -------------------------------


async def layout(pages: int) -> int:
    await asyncio.sleep(0.01)
    return pages * 2


@render.implement(retries=2)
async def render_impl(ctx: durable.Context[Report]) -> str:
    columns = await ctx.step.run("layout", layout, ctx.input.pages)
    return f"{ctx.input.customer}: {columns} columns"


@transcode.implement()
async def transcode_impl(ctx: durable.Context[Report]) -> str:
    frames = await ctx.step.run("encode", layout, ctx.input.pages)
    return f"{ctx.input.customer}: {frames} frames on a GPU worker"


async def main() -> None:
    # two workers: only the second offers a GPU, so only it takes the transcode run
    cpu = durable.Worker(workflows=[render_impl, transcode_impl], queues=["reports"],
                         concurrency=4, poll_interval=0.2)
    gpu = durable.Worker(workflows=[render_impl, transcode_impl], queues=["reports"],
                         concurrency=4, labels={"gpu": "true"}, poll_interval=0.2)
    tasks = [asyncio.create_task(w.run(install_signal_handlers=False)) for w in (cpu, gpu)]

    # --- api_service.py: start runs and read them, without the code ------------
    async with durable.Client() as client:
        try:
            await client.start_workflow(render, {"customer": "acme"})  # no pages
        except durable.InvalidInput as exc:
            print("rejected before anything was written:", exc.message.split(";")[0])
        runs = [
            await client.start_workflow(render, {"customer": f"c{i}", "pages": i})
            for i in range(1, 4)
        ]
        video = await client.start_workflow(transcode, {"customer": "studio", "pages": 12})
        for run in [*runs, video]:
            done = await client.wait_for_run(run.id, timeout=30)
            progress = await client.check_progress(run.id)
            worker = next(
                r.meta["worker"] for r in client.engine.history(run.id) if r.kind == "claim"
            )
            which = "gpu" if worker == gpu.worker_id else "cpu"
            print(f"{done.output:<38} {progress.completed_steps}/{progress.total_steps} steps,"
                  f" claimed by the {which} worker")
        print("live workers:", len(durable.worker.live_workers(client.engine)))

    for worker in (cpu, gpu):
        worker.request_stop()  # what SIGTERM does: finish, hand runs back, exit
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
