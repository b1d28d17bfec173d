"""The in-memory store (``sqlite://``) under the engine's own concurrency loses nothing.

One connection is shared by every thread; the store serializes its transactions.
Before, 10-30% of runs were lost or broken ("cannot start a transaction within a
transaction", ``RunNotFound``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import sample_machines as sm
import sqlalchemy as sa

import durable
import statewf


def test_machines_from_many_threads_on_the_memory_store() -> None:
    engine = statewf.Engine("sqlite://")
    engine.register(sm.counter_machine())
    created: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            for _ in range(10):
                instance = engine.create("counter", context={"n": 0})
                for _ in range(5):
                    engine.send(instance.id, "INC")
                with lock:
                    created.append(instance.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(created) == 80
    for instance_id in created:
        assert engine.get(instance_id).context["n"] == 5
        assert [r.seq for r in engine.history(instance_id)] == list(range(1, 7))
    engine.close()


def test_workflows_under_the_engines_concurrency_on_the_memory_store() -> None:
    store = statewf.Engine("sqlite://")
    with store.store.engine.begin() as conn:
        conn.execute(sa.text("create table app_ledger (run_id text, step text)"))

    def plain(i: int) -> int:
        return i * 2

    def record(conn: durable.Connection, run_id: str) -> str:
        conn.execute(
            sa.text("insert into app_ledger values (:r, 'tx')"), {"r": run_id}
        )
        return run_id

    @durable.workflow("memory-flow")
    async def flow(ctx: durable.Context[Any]) -> dict[str, Any]:
        a = await ctx.step.run("a", plain, ctx.input["i"])
        b = await asyncio.gather(*(ctx.step.run(f"p{k}", plain, k) for k in range(3)))
        await ctx.step.sleep("nap", 0)
        tx = await ctx.step.transaction("tx", record, ctx.run_id)
        event = await ctx.step.wait_for("go", event="go")
        return {"a": a, "b": list(b), "tx": tx, "event": event}

    async def main() -> None:
        async with durable.WorkflowEngine(store, workflows=[flow]) as engine:
            runs = await asyncio.gather(
                *(engine.start_workflow(flow, {"i": i}) for i in range(40))
            )

            async def send_when_waiting(run_id: str) -> None:
                for _ in range(2000):
                    if store.get(run_id).status == "waiting":
                        break
                    await asyncio.sleep(0.005)
                await engine.trigger_event(run_id, "go", {"run": run_id})

            await asyncio.gather(*(send_when_waiting(r.id) for r in runs))
            done = await asyncio.gather(
                *(engine.wait_for_run(r.id, timeout=60) for r in runs)
            )
            for i, (run, result) in enumerate(zip(runs, done, strict=True)):
                assert result.status == "completed", result.error
                assert result.output == {
                    "a": i * 2,
                    "b": [0, 2, 4],
                    "tx": run.id,
                    "event": {"run": run.id},
                }

    asyncio.run(main())
    with store.store.engine.connect() as conn:
        rows = conn.execute(sa.text("select count(*), count(distinct run_id) from app_ledger"))
        assert tuple(rows.one()) == (40, 40)
    store.close()
