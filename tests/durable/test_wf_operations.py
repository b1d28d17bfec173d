"""Dead letters and repairs: retry a failed or dead run, discard it, fork a run from a step."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from wf_flows import CALLS, EXPECTED_OUTPUT, ORDER, Make, counted, kinds, pipeline5, until

import durable
from durable.errors import RunFinished
from durable.log.records import DEAD, KIND_DEAD, RUN_KIND
from statewf import cli
from statewf.errors import DuplicateInstance, InvalidInput
from statewf.fold import apply
from statewf.records import TransitionRecord
from statewf.testing import ManualClock

BROKEN: dict[str, bool] = {}


def breakable(name: str, value: Any) -> Any:
    """A step that counts its calls and raises while ``BROKEN[name]`` is set."""

    def step() -> Any:
        CALLS[name] += 1
        if BROKEN.get(name):
            raise RuntimeError(f"{name} is broken")
        return value

    step.__name__ = name
    return step


@pytest.fixture(autouse=True)
def _reset_broken() -> None:
    BROKEN.clear()


@durable.workflow("ops-order")
async def ops_order(ctx: durable.Context[None]) -> list[Any]:
    """reserve, charge (fails while broken), ship."""
    reserved = await ctx.step.run("reserve", counted("reserve", "r"))
    charged = await ctx.step.run("charge", breakable("charge", "c"), retries=0)
    shipped = await ctx.step.run("ship", counted("ship", "s"))
    return [reserved, charged, shipped]


@durable.workflow("ops-body")
async def ops_body(ctx: durable.Context[None]) -> str:
    """One step, then a failure in the workflow body itself while ``BROKEN["body"]``."""
    value = await ctx.step.run("only", counted("only", "v"))
    if BROKEN.get("body"):
        raise ValueError("bug in the workflow body")
    return str(value)


@durable.workflow("ops-fan")
async def ops_fan(ctx: durable.Context[None]) -> list[Any]:
    """A parallel pair where the first fails and its sibling succeeds."""
    first = await ctx.step.run("first", counted("first", 1))
    pair = await ctx.gather(
        ctx.step.run("left", breakable("left", "L"), retries=0),
        ctx.step.run("right", counted("right", "R")),
    )
    return [first, *pair]


@durable.workflow("ops-compensate")
async def ops_compensate(ctx: durable.Context[None]) -> str:
    """A failed charge is compensated by a refund; then the body fails while broken."""
    try:
        await ctx.step.run("charge", breakable("charge", "c"), retries=0)
    except durable.StepFailed:
        await ctx.step.run("refund", counted("refund", "refunded"))
    if BROKEN.get("body"):
        raise ValueError("could not tell the customer")
    return "told"


@durable.workflow("ops-nap")
async def ops_nap(ctx: durable.Context[None]) -> str:
    """A step, a one-minute sleep, a step."""
    await ctx.step.run("one", counted("one", 1))
    await ctx.step.sleep("nap", 60)
    return str(await ctx.step.run("two", counted("two", 2)))


@durable.workflow("ops-paid")
async def ops_paid(ctx: durable.Context[None]) -> list[Any]:
    """Waits for an event, then two steps."""
    paid = await ctx.step.wait_for("payment", event="paid")
    a = await ctx.step.run("book", counted("book", "b"))
    c = await ctx.step.run("confirm", counted("confirm", "c"))
    return [paid, a, c]


def log_of(engine: durable.WorkflowEngine, run_id: str) -> list[dict[str, Any]]:
    """A run's whole log, as plain data."""
    return [r.model_dump(mode="json") for r in engine.engine.history(run_id)]


def dead_letter(engine: durable.WorkflowEngine, run_id: str, reason: str) -> None:
    """Move a run to the dead letters as a worker would: one ``dead_letter`` row."""
    store = engine.engine.store
    with store.transaction() as tx:
        snap = tx.get_instance(run_id, lock=True)
        assert snap is not None
        assert snap.kind == RUN_KIND
        record = TransitionRecord(
            instance_id=run_id,
            seq=snap.version + 1,
            kind=KIND_DEAD,
            source=snap.configuration,
            status=DEAD,
            meta={"reason": reason, "takeovers": 3},
            created_at=engine.executor.host.clock.now(),
        )
        tx.update_instance(apply(snap, record), snap.version)
        tx.append([record])


def invoke(db: dict[str, str | None], *args: str, code: int = 0) -> str:
    cli._load_plugins()
    base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])
    result = CliRunner().invoke(cli.cli, [*base, *args], catch_exceptions=code == 0)
    assert result.exit_code == code, result.output
    return result.output


# ------------------------------------------------------------ retry


def test_retry_runs_the_failed_step_again_and_replays_the_earlier_ones(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_order]) as engine:
            BROKEN["charge"] = True
            run = await engine.start_workflow(ops_order)
            failed = await engine.wait_for_run(run.id, timeout=10)
            assert failed.status == "failed"
            assert failed.error is not None
            assert failed.error.step == "charge"
            assert (CALLS["reserve"], CALLS["charge"], CALLS["ship"]) == (1, 1, 0)

            BROKEN["charge"] = False  # the fix is deployed
            retried = await engine.retry_run(run.id, reason="charge fixed")
            assert retried.status == "waiting"
            assert retried.error is None
            assert await engine.result(run.id, timeout=10) == ["r", "c", "s"]
            assert (CALLS["reserve"], CALLS["charge"], CALLS["ship"]) == (1, 2, 1)
            assert kinds(engine, run.id).count("retry_run") == 1
            row = next(r for r in engine.engine.history(run.id) if r.kind == "retry_run")
            assert row.meta["voided"] == [1]
            assert row.meta["reason"] == "charge fixed"
            assert row.meta["error"]["step"] == "charge"
            done = await engine.get_run(run.id)
            assert done.error is None
            assert done.completed_steps == 3
            timeline = await engine.get_timeline(run.id)
            assert [(s.key, s.status) for s in timeline] == [
                ("reserve", "completed"),
                ("charge", "completed"),
                ("ship", "completed"),
            ]

    asyncio.run(main())


def test_retry_of_a_failure_in_the_workflow_body_replays_every_step(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_body]) as engine:
            BROKEN["body"] = True
            run = await engine.start_workflow(ops_body)
            failed = await engine.wait_for_run(run.id, timeout=10)
            assert failed.status == "failed"
            assert failed.error is not None
            assert failed.error.step is None
            BROKEN["body"] = False
            await engine.retry_run(run.id)
            assert await engine.result(run.id, timeout=10) == "v"
            assert CALLS["only"] == 1  # replayed from the log, never executed again
            row = next(r for r in engine.engine.history(run.id) if r.kind == "retry_run")
            assert row.meta["voided"] == []

    asyncio.run(main())


def test_retry_voids_a_failed_parallel_step_but_keeps_its_successful_sibling(
    make_engine: Make,
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_fan]) as engine:
            BROKEN["left"] = True
            run = await engine.start_workflow(ops_fan)
            assert (await engine.wait_for_run(run.id, timeout=10)).status == "failed"
            assert CALLS["right"] == 1
            BROKEN["left"] = False
            await engine.retry_run(run.id)
            assert await engine.result(run.id, timeout=10) == [1, "L", "R"]
            assert (CALLS["first"], CALLS["left"], CALLS["right"]) == (1, 2, 1)

    asyncio.run(main())


def test_retry_keeps_a_compensated_failure_when_a_later_step_succeeded(
    make_engine: Make,
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_compensate]) as engine:
            BROKEN.update(charge=True, body=True)
            run = await engine.start_workflow(ops_compensate)
            assert (await engine.wait_for_run(run.id, timeout=10)).status == "failed"
            BROKEN.update(charge=False, body=False)
            await engine.retry_run(run.id)
            assert await engine.result(run.id, timeout=10) == "told"
            # the compensated failure stays in the log: charge is not tried again
            assert (CALLS["charge"], CALLS["refund"]) == (1, 1)

    asyncio.run(main())


def test_a_retried_run_that_fails_again_can_be_retried_again(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_order]) as engine:
            BROKEN["charge"] = True
            run = await engine.start_workflow(ops_order)
            await engine.wait_for_run(run.id, timeout=10)
            await engine.retry_run(run.id)
            await until(lambda: engine.engine.get(run.id).status == "failed", "second failure")
            BROKEN["charge"] = False
            await engine.retry_run(run.id)
            assert await engine.result(run.id, timeout=10) == ["r", "c", "s"]
            assert (CALLS["reserve"], CALLS["charge"]) == (1, 3)
            assert kinds(engine, run.id).count("retry_run") == 2

    asyncio.run(main())


def test_dead_letters_list_and_a_dead_run_retried_goes_on_where_it_was(
    make_engine: Make, clock: ManualClock
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_nap, ops_order]) as engine:
            BROKEN["charge"] = True
            failed = await engine.start_workflow(ops_order)
            await engine.wait_for_run(failed.id, timeout=10)
            napping = await engine.start_workflow(ops_nap)
            await until(lambda: engine.engine.get(napping.id).status == "waiting", "the nap")
        dead_letter(engine, napping.id, "worker died 3 times")
        async with make_engine(workflows=[ops_nap]) as engine:
            both = await engine.dead_letters()
            assert {r.id for r in both.items} == {failed.id, napping.id}
            only_dead = await engine.dead_letters(include_failed=False)
            assert [(r.id, r.status) for r in only_dead.items] == [(napping.id, "dead")]
            assert (await engine.dead_letters(workflow="ops-order")).items[0].id == failed.id
            assert (await engine.dead_letters(resource_id="nobody")).items == []
            first = await engine.dead_letters(limit=1)
            rest = await engine.dead_letters(limit=1, cursor=first.next_cursor)
            assert {r.id for r in first.items + rest.items} == {failed.id, napping.id}

            retried = await engine.retry_run(napping.id)
            assert retried.status == "waiting"
            assert retried.waiting is None
            clock.advance(timedelta(seconds=61))
            assert await engine.result(napping.id, timeout=10) == "2"
            assert (CALLS["one"], CALLS["two"]) == (1, 1)
            row = next(r for r in engine.engine.history(napping.id) if r.kind == "retry_run")
            assert row.meta["voided"] == []  # the sleep keeps its time
            assert (await engine.dead_letters(include_failed=False)).items == []

    asyncio.run(main())


# ------------------------------------------------------------ discard, and wrong statuses


def test_discard_cancels_a_failed_run_once(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_order]) as engine:
            BROKEN["charge"] = True
            run = await engine.start_workflow(ops_order)
            await engine.wait_for_run(run.id, timeout=10)
            with pytest.raises(InvalidInput, match="needs a reason"):
                await engine.discard_run(run.id, reason=" ")
            discarded = await engine.discard_run(run.id, reason="customer gave up")
            assert discarded.status == "cancelled"
            row = engine.engine.history(run.id)[-1]
            assert (row.kind, row.meta["reason"]) == ("discard", "customer gave up")
            with pytest.raises(RunFinished, match=f"run '{run.id}' is cancelled"):
                await engine.discard_run(run.id, reason="again")
            with pytest.raises(RunFinished, match=f"run '{run.id}' is cancelled"):
                await engine.retry_run(run.id)
            assert kinds(engine, run.id).count("discard") == 1

    asyncio.run(main())


def test_only_failed_or_dead_runs_can_be_retried_or_discarded(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_order, ops_nap]) as engine:
            done = await engine.start_workflow(ops_order)
            await engine.wait_for_run(done.id, timeout=10)
            with pytest.raises(RunFinished, match=f"run '{done.id}' is completed.*fork"):
                await engine.retry_run(done.id)
            napping = await engine.start_workflow(ops_nap)
            await until(lambda: engine.engine.get(napping.id).status == "waiting", "the nap")
            before = log_of(engine, napping.id)
            with pytest.raises(InvalidInput, match=f"run '{napping.id}' is waiting, not failed"):
                await engine.retry_run(napping.id)
            with pytest.raises(InvalidInput, match=f"run '{napping.id}' is waiting"):
                await engine.discard_run(napping.id, reason="x")
            assert log_of(engine, napping.id) == before
            with pytest.raises(durable.RunNotFound, match="no workflow run 'nope'"):
                await engine.retry_run("nope")
            with pytest.raises(durable.RunNotFound):
                await engine.retry_run(done.id, resource_id="other")

    asyncio.run(main())


# ------------------------------------------------------------ fork


def test_fork_replays_the_steps_before_the_named_one_and_leaves_the_original(
    make_engine: Make,
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[pipeline5]) as engine:
            run = await engine.start_workflow(pipeline5, ORDER, resource_id="acme")
            await engine.wait_for_run(run.id, timeout=10)
            before = log_of(engine, run.id)
            CALLS.clear()
            fork = await engine.fork_run(run.id, from_step="pack-b", new_run_id="fork-1")
            assert (fork.id, fork.workflow, fork.resource_id) == ("fork-1", "pipeline-5", "acme")
            assert fork.status == "waiting"
            assert fork.input == ORDER
            assert fork.completed_steps == 3
            assert await engine.result("fork-1", timeout=10) == EXPECTED_OUTPUT
            assert CALLS == {
                "pack-b": 1,
                "pack-c": 1,
                "notify-email": 1,
                "notify-sms": 1,
                "ship": 1,
            }
            assert log_of(engine, run.id) == before
            rows = engine.engine.history("fork-1")
            assert rows[0].meta["forked_from"] == {
                "run": run.id,
                "step": "pack-b",
                "position": 3,
            }
            copied = [r for r in rows[1:] if "forked_from" in r.meta]
            assert [r.key for r in copied] == ["validate", "charge", "pack-a"]
            assert rows[len(copied) + 1].kind == "fork"
            with pytest.raises(DuplicateInstance, match="'fork-1' already exists"):
                await engine.fork_run(run.id, from_step="ship", new_run_id="fork-1")
            with pytest.raises(InvalidInput, match=f"run '{run.id}' has no step 'pack-z'.*'ship'"):
                await engine.fork_run(run.id, from_step="pack-z")
            first = await engine.fork_run(run.id, from_step="validate")
            assert await engine.result(first.id, timeout=10) == EXPECTED_OUTPUT
            assert CALLS["validate"] == 1

    asyncio.run(main())


def test_fork_copies_the_events_its_waits_took(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_paid]) as engine:
            run = await engine.start_workflow(ops_paid)
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the wait")
            await engine.trigger_event(run.id, "paid", {"eur": 5})
            assert await engine.result(run.id, timeout=10) == [{"eur": 5}, "b", "c"]
            fork = await engine.fork_run(run.id, from_step="confirm")
            assert await engine.result(fork.id, timeout=10) == [{"eur": 5}, "b", "c"]
            assert (CALLS["book"], CALLS["confirm"]) == (1, 2)
            assert "event" in kinds(engine, fork.id)

    asyncio.run(main())


def test_fork_of_a_failed_run_from_its_failed_step(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_order]) as engine:
            BROKEN["charge"] = True
            run = await engine.start_workflow(ops_order)
            await engine.wait_for_run(run.id, timeout=10)
            BROKEN["charge"] = False
            fork = await engine.fork_run(run.id, from_step="charge")
            assert await engine.result(fork.id, timeout=10) == ["r", "c", "s"]
            assert (CALLS["reserve"], CALLS["charge"]) == (1, 2)
            assert (await engine.get_run(run.id)).status == "failed"
            BROKEN["charge"] = True
            second = await engine.start_workflow(ops_order)
            await engine.wait_for_run(second.id, timeout=10)
            BROKEN["charge"] = False
            await engine.retry_run(second.id)
            again = await engine.fork_run(second.id, from_step="charge")  # a voided step
            assert again.completed_steps == 1
            assert await engine.result(again.id, timeout=10) == ["r", "c", "s"]

    asyncio.run(main())


# ------------------------------------------------------------ the CLI


def test_dlq_and_fork_commands(make_engine: Make, db: dict[str, str | None]) -> None:
    async def main() -> None:
        async with make_engine(workflows=[ops_order], poll_interval=0.05) as engine:
            BROKEN["charge"] = True
            first = await engine.start_workflow(ops_order)
            second = await engine.start_workflow(ops_order)
            await engine.wait_for_run(first.id, timeout=10)
            await engine.wait_for_run(second.id, timeout=10)

            listed = await asyncio.to_thread(invoke, db, "runs", "dlq", "list")
            assert first.id in listed
            assert second.id in listed
            assert "RuntimeError" in listed
            none = await asyncio.to_thread(invoke, db, "runs", "dlq", "list", "--no-failed")
            assert "no dead runs" in none
            as_json = await asyncio.to_thread(invoke, db, "runs", "dlq", "list", "--json")
            assert f'"id": "{first.id}"' in as_json

            shown = await asyncio.to_thread(invoke, db, "runs", "dlq", "show", first.id)
            assert "charge is broken" in shown
            assert "step_failed" in shown

            BROKEN["charge"] = False
            out = await asyncio.to_thread(invoke, db, "runs", "dlq", "retry", first.id)
            assert f"run {first.id} is waiting" in out
            assert await engine.result(first.id, timeout=10) == ["r", "c", "s"]

            out = await asyncio.to_thread(
                invoke, db, "runs", "dlq", "discard", second.id, "--reason", "duplicate order"
            )
            assert f"run {second.id} is cancelled" in out
            again = await asyncio.to_thread(
                invoke, db, "runs", "dlq", "discard", second.id, "--reason", "x", code=1
            )
            assert f"RunFinished: run '{second.id}' is cancelled" in again

            out = await asyncio.to_thread(
                invoke, db, "runs", "fork", first.id, "--from-step", "ship", "--new-id", "f-9"
            )
            assert "forked run" in out
            assert "f-9" in out
            assert await engine.result("f-9", timeout=10) == ["r", "c", "s"]
            bad = await asyncio.to_thread(
                invoke, db, "runs", "fork", first.id, "--from-step", "nope", code=1
            )
            assert "has no step 'nope'" in bad
            assert (CALLS["reserve"], CALLS["ship"]) == (2, 2)

    asyncio.run(main())
