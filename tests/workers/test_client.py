"""durable.Client and durable.Worker together: a client starts and steers, a worker executes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import flow_app
import pytest
from flow_app import FlowInput, Running, count_rows, wait_until

import durable
import statewf
from statewf.errors import InvalidInput
from tests.conftest import tracked

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

Db = dict[str, str | None]


@pytest.fixture(autouse=True)
def _clear_ledger() -> None:
    flow_app.LEDGER.clear()


def client_of(db: Db) -> durable.Client:
    return durable.Client(db["url"], schema=db["schema"])


def worker_of(db: Db, **kw: Any) -> durable.Worker:
    """A worker on its own statewf Engine (as in its own process), closed when the test ends."""
    engine = tracked(statewf.Engine(db["url"], schema=db["schema"]))
    kw.setdefault("workflows", [flow_app.three_impl, flow_app.gated_impl])
    kw.setdefault("queues", ["q"])
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("shutdown_timeout", 5.0)
    return durable.Worker(engine, **kw)


def claims(history: list[Any]) -> list[Any]:
    return [r for r in history if r.kind == "claim"]


def test_start_by_ref_validates_input_then_a_worker_executes_it_with_real_progress(
    db: Db,
) -> None:
    async def main() -> None:
        async with client_of(db) as client:
            with pytest.raises(InvalidInput):
                await client.start_workflow(flow_app.three, {"sleep": "not a number"})
            with pytest.raises(InvalidInput):
                await client.start_workflow(flow_app.three, {"sleep": 0, "tag": ["x"]})
            assert count_rows(client.engine, "instances") == 0
            assert count_rows(client.engine, "transitions") == 0

            run = await client.start_workflow(flow_app.three, {"sleep": 0.3, "tag": "t1"})
            assert run.status == "pending"  # created, not yet claimed by a worker
            assert count_rows(client.engine, "instances") == 1
            assert count_rows(client.engine, "transitions") == 1  # the create row only
            # the client has no code: before a worker claims the run nothing knows its plan
            before = await client.check_progress(run.id)
            assert before.completed_steps == 0
            assert before.total_steps is None
            assert before.status == "pending"
            pending = await client.get_runs(status="pending")
            assert [r.id for r in pending.items] == [run.id]

            worker = worker_of(db)
            async with Running(worker):

                async def claimed_and_one_step_done() -> bool:
                    p = await client.check_progress(run.id)
                    return p.completed_steps >= 1

                await wait_until(claimed_and_one_step_done)
                during = await client.check_progress(run.id)
                # the claim row wrote the plan: the real total, while the run is executing
                assert during.total_steps == 3
                assert not during.approximate
                assert during.status == "running"
                assert 1 <= during.completed_steps < 3
                done = await client.wait_for_run(run.id, timeout=20)
            assert done.status == "completed"
            assert done.output == {"steps": ["one", "two", "three"], "tag": "t1"}
            after = await client.check_progress(run.id)
            assert (after.completed_steps, after.total_steps) == (3, 3)
            assert after.completion_percentage == 100
            history = client.engine.history(run.id)
            (claim,) = claims(history)
            assert claim.meta["worker"] == worker.worker_id
            assert claim.meta["epoch"] == 1
            assert [r.status for r in history[:2]] == ["pending", "running"]  # the claim
            assert [k for r, k in flow_app.LEDGER if r == run.id] == ["one", "two", "three"]

    asyncio.run(main())


def test_event_pause_resume_cancel_from_the_client_on_runs_a_worker_executes(db: Db) -> None:
    async def main() -> None:
        async with client_of(db) as client, Running(worker_of(db, concurrency=4)):
            # an event: the run waits for "go", the client sends it
            gated = await client.start_workflow(flow_app.gated, {})

            async def waiting() -> bool:
                return (await client.get_run(gated.id)).status == "waiting"

            await wait_until(waiting)
            await client.trigger_event(gated.id, "go", {"x": 1})
            done = await client.wait_for_run(gated.id, timeout=20)
            assert done.status == "completed"
            assert done.output == {"got": {"x": 1}}

            # pause mid-run: it stops at its next step boundary and stays paused
            slow = await client.start_workflow(flow_app.three, {"sleep": 0.3})

            async def one_step() -> bool:
                return (await client.check_progress(slow.id)).completed_steps >= 1

            await wait_until(one_step)
            await client.pause_workflow(slow.id)

            async def paused() -> bool:
                return (await client.get_run(slow.id)).status == "paused"

            await wait_until(paused)
            steps_at_pause = (await client.check_progress(slow.id)).completed_steps
            assert steps_at_pause < 3
            # the step under way at the pause may still record; then the execution stops
            # and hands the run back
            await wait_until(lambda: _released(client, slow.id))
            settled = (await client.check_progress(slow.id)).completed_steps
            assert steps_at_pause <= settled <= steps_at_pause + 1
            assert settled < 3
            await asyncio.sleep(0.6)  # and then nothing more happens until resumed
            assert (await client.get_run(slow.id)).status == "paused"
            assert (await client.check_progress(slow.id)).completed_steps == settled
            assert len([k for r, k in flow_app.LEDGER if r == slow.id]) == settled
            assert count_rows(client.engine, "instances", id=slow.id, lease_owner=None) == 1
            await client.resume_workflow(slow.id)
            done = await client.wait_for_run(slow.id, timeout=20)
            assert done.status == "completed"
            assert [k for r, k in flow_app.LEDGER if r == slow.id] == ["one", "two", "three"]

            # cancel a waiting run: its later step never executes
            doomed = await client.start_workflow(flow_app.gated, {})
            await wait_until(lambda: _status_is(client, doomed.id, "waiting"))
            cancelled = await client.cancel_workflow(doomed.id, reason="no longer needed")
            assert cancelled.status == "cancelled"
            # cancel a run mid-step: it stops at its next step
            busy = await client.start_workflow(flow_app.three, {"sleep": 0.3})
            await wait_until(lambda: _steps_at_least(client, busy.id, 1))
            await client.cancel_workflow(busy.id)
            await wait_until(lambda: _released(client, busy.id))
            assert (await client.get_run(doomed.id)).status == "cancelled"
            assert (await client.get_run(busy.id)).status == "cancelled"
            assert [k for r, k in flow_app.LEDGER if r == doomed.id] == ["before"]
            assert len([k for r, k in flow_app.LEDGER if r == busy.id]) < 3
            for run_id in (doomed.id, busy.id):
                assert count_rows(client.engine, "instances", id=run_id, lease_owner=None) == 1

    asyncio.run(main())


async def _released(client: durable.Client, run_id: str) -> bool:
    """No execution holds the run any more."""
    return count_rows(client.engine, "instances", id=run_id, lease_owner=None) == 1


async def _status_is(client: durable.Client, run_id: str, status: str) -> bool:
    return (await client.get_run(run_id)).status == status


async def _steps_at_least(client: durable.Client, run_id: str, n: int) -> bool:
    return (await client.check_progress(run_id)).completed_steps >= n


def test_idempotency_key_returns_the_same_run(db: Db) -> None:
    async def main() -> None:
        async with client_of(db) as client:
            first = await client.start_workflow(flow_app.three, {}, idempotency_key="order-7")
            again = await asyncio.gather(
                *(
                    client.start_workflow(flow_app.three, {"tag": "x"}, idempotency_key="order-7")
                    for _ in range(4)
                )
            )
            assert {r.id for r in again} == {first.id}
            assert count_rows(client.engine, "instances") == 1
            async with Running(worker_of(db)):
                done = await client.wait_for_run(first.id, timeout=20)
            assert done.status == "completed"
            late = await client.start_workflow(flow_app.three, {}, idempotency_key="order-7")
            assert late.id == first.id
            assert late.status == "completed"
            assert count_rows(client.engine, "instances") == 1
            assert Counter(r for r, _ in flow_app.LEDGER) == {first.id: 3}

    asyncio.run(main())


CLIENT_SCRIPT = """
import asyncio, json, sys
from pydantic import BaseModel
import durable

class FlowInput(BaseModel):
    sleep: float = 0.0
    tag: str = ""

three = durable.ref("three-steps", input=FlowInput, queue="q")

async def main():
    url, schema = sys.argv[1], (None if sys.argv[2] == "-" else sys.argv[2])
    async with durable.Client(url, schema=schema) as client:
        try:
            await client.start_workflow(three, {"sleep": "bad"})
            rejected = False
        except durable.InvalidInput:
            rejected = True
        run = await client.start_workflow(three, {"tag": "from-api"})
        progress = await client.check_progress(run.id)
    loaded = sorted(
        m for m in sys.modules
        if m.split(".")[0] in ("flow_app", "wf_flows", "graphviz", "opentelemetry")
    )
    print(json.dumps({"run": run.id, "rejected": rejected, "loaded": loaded,
                      "total": progress.total_steps}))

asyncio.run(main())
"""


def test_a_client_process_without_the_handler_module_starts_runs_a_worker_executes(
    db: Db,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)  # the project, not tests/workers (no flow_app there)
    out = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, str(db["url"]), db["schema"] or "-"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rejected"] is True
    assert report["loaded"] == []  # neither handler code nor graphviz / opentelemetry
    assert report["total"] is None

    async def main() -> None:
        async with client_of(db) as client:
            assert count_rows(client.engine, "instances") == 1
            async with Running(worker_of(db)):
                done = await client.wait_for_run(report["run"], timeout=20)
            assert done.status == "completed"
            assert done.output == {"steps": ["one", "two", "three"], "tag": "from-api"}

    asyncio.run(main())


def test_the_client_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, durable; from durable import Client, ref; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('graphviz', 'opentelemetry', 'flow_app', 'wf_flows', 'click')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def _v2(ctx: durable.Context[FlowInput]) -> dict[str, Any]:
    await ctx.step.run("v2-only", flow_app.effect, ctx.run_id, "v2-only", 0.0)
    return {"version": 2}


def test_a_version_no_worker_implements_waits_unclaimed_until_one_appears(db: Db) -> None:
    v2 = durable.ref("three-steps", input=FlowInput, version="2", queue="q")

    async def main() -> None:
        async with client_of(db) as client:
            later = await client.start_workflow(v2, {})
            now = await client.start_workflow(flow_app.three, {})
            old = worker_of(db)
            async with Running(old):
                assert (await client.wait_for_run(now.id, timeout=20)).status == "completed"
                await asyncio.sleep(1.0)  # ten poll intervals
                run = await client.get_run(later.id)
                assert run.status == "pending"  # no worker has its version: never claimed
                assert [r.kind for r in client.engine.history(later.id)] == ["create"]
                assert count_rows(client.engine, "instances", id=later.id, lease_owner=None) == 1
                new = worker_of(db, workflows=[v2.implement(_v2)])
                async with Running(new):
                    done = await client.wait_for_run(later.id, timeout=20)
            assert done.status == "completed"
            assert done.output == {"version": 2}
            (claim,) = claims(client.engine.history(later.id))
            assert claim.meta["worker"] == new.worker_id
            assert [k for r, k in flow_app.LEDGER if r == later.id] == ["v2-only"]

    asyncio.run(main())


def test_a_run_needing_a_label_goes_only_to_a_worker_offering_it(db: Db) -> None:
    async def main() -> None:
        async with client_of(db) as client:
            gpu_run = await client.start_workflow(flow_app.three, {}, labels={"gpu": "true"})
            plain_run = await client.start_workflow(flow_app.three, {})
            plain = worker_of(db)
            wrong = worker_of(db, labels={"gpu": "false", "zone": "a"})
            async with Running(plain, wrong):
                assert (await client.wait_for_run(plain_run.id, timeout=20)).status == "completed"
                await asyncio.sleep(1.0)
                assert [r.kind for r in client.engine.history(gpu_run.id)] == ["create"]
                gpu = worker_of(db, labels={"gpu": "true", "zone": "b"})
                async with Running(gpu):
                    done = await client.wait_for_run(gpu_run.id, timeout=20)
            assert done.status == "completed"
            (claim,) = claims(client.engine.history(gpu_run.id))
            assert claim.meta["worker"] == gpu.worker_id
            (plain_claim,) = claims(client.engine.history(plain_run.id))
            assert plain_claim.meta["worker"] in (plain.worker_id, wrong.worker_id)

    asyncio.run(main())


def test_higher_priority_runs_are_claimed_first(db: Db) -> None:
    priorities = [0, 5, -3, 10, 5, 0, 7, -3, 10, 1, 0, 2]

    async def main() -> None:
        async with client_of(db) as client:
            runs = []
            for i, p in enumerate(priorities):
                runs.append(
                    await client.start_workflow(flow_app.three, {"tag": str(i)}, priority=p)
                )
            # a ref's own priority is used when the call gives none
            urgent = durable.ref("three-steps", input=FlowInput, queue="q", priority=50)
            top = await client.start_workflow(urgent, {"tag": "urgent"})
            async with Running(worker_of(db, concurrency=1)):
                for run in [*runs, top]:
                    assert (await client.wait_for_run(run.id, timeout=30)).status == "completed"
            claimed_at = {}
            for run in [*runs, top]:
                (claim,) = claims(client.engine.history(run.id))
                claimed_at[run.id] = claim.created_at
            order = sorted(claimed_at, key=claimed_at.__getitem__)
            expected = [top.id] + [
                runs[i].id for i in sorted(range(len(runs)), key=lambda i: (-priorities[i], i))
            ]
            assert order == expected
            # one at a time: each claim after the previous run's final row
            ends = {r.id: client.engine.history(r.id)[-1].created_at for r in [*runs, top]}
            for a, b in itertools.pairwise(order):
                assert ends[a] <= claimed_at[b]

    asyncio.run(main())


review = durable.ref("review-doc", queue="q")


@review.implement()
async def review_impl(ctx: durable.Context[Any]) -> str:
    decision = await ctx.step.approval("legal")
    return f"{decision.approved}:{decision.reviewer}"


def test_a_client_approves_and_rejects_the_pending_approval_without_naming_it(db: Db) -> None:
    async def main() -> None:
        worker = worker_of(db, workflows=[review_impl])
        async with client_of(db) as client, Running(worker):
            yes = await client.start_workflow(review)
            no = await client.start_workflow(review)

            async def both_wait() -> bool:
                runs = [await client.get_run(r.id) for r in (yes, no)]
                return all(r.status == "waiting" for r in runs)

            await wait_until(both_wait)
            await client.approve(yes.id, reviewer="ada")  # the step found from the run
            await client.reject(no.id, reviewer="bob", reason="missing clause")
            assert (await client.wait_for_run(yes.id, timeout=20)).output == "True:ada"
            assert (await client.wait_for_run(no.id, timeout=20)).output == "False:bob"

    asyncio.run(main())
