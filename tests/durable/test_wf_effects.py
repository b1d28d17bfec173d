"""Effects: transactional steps (exactly once), idempotency keys, sagas, pipelines."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import wf_flows
from wf_flows import Crash, Make, crash_at_write

import durable
import statewf


@pytest.fixture
def accounts(db: dict[str, str | None]) -> Iterator[sa.Table]:
    """An application table in the same database as statewf's (dropped after the test)."""
    md = sa.MetaData(schema=db["schema"])
    table = sa.Table(
        f"app_ledger_{uuid.uuid4().hex[:8]}",
        md,
        sa.Column("entry", sa.String(100), primary_key=True),
        sa.Column("amount", sa.Integer, nullable=False),
    )
    statewf.Engine(db["url"], schema=db["schema"]).close()  # creates the Postgres schema
    engine = sa.create_engine(str(db["url"]))
    md.create_all(engine)
    yield table
    md.drop_all(engine)
    engine.dispose()


def rows(engine: durable.WorkflowEngine, table: sa.Table) -> list[tuple[Any, ...]]:
    with engine.engine.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.entry))]


def debit_workflow(table: sa.Table, crash_after_insert: int = 0) -> durable.Workflow[Any, Any]:
    """Two transactional writes; the first fails once, the second may crash once mid-way."""

    def debit(conn: durable.Connection, entry: str, amount: int) -> dict[str, Any]:
        wf_flows.CALLS[entry] += 1
        conn.execute(table.insert().values(entry=entry, amount=amount))
        if entry == "debit" and wf_flows.CALLS[entry] == 1:
            raise ConnectionError("lost the card network after writing")
        if entry == "credit" and wf_flows.CALLS[entry] == crash_after_insert:
            raise Crash("process died inside the transaction")
        step = durable.current_step()
        assert step is not None
        return {"entry": entry, "key": step.idempotency_key, "attempt": step.attempt}

    @durable.workflow("transfer")
    async def transfer(ctx: durable.Context[None]) -> list[Any]:
        a = await ctx.step.transaction("debit", debit, "debit", -5, retries=2, retry_delay=0)
        b = await ctx.step.transaction("credit", debit, "credit", 5)
        return [a, b]

    return transfer


def test_transactional_step_writes_commit_with_the_log_row(
    make_engine: Make, accounts: sa.Table
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[debit_workflow(accounts)]) as engine:
            run = await engine.start_workflow("transfer", run_id="t-1")
            out = await engine.result(run.id)
            # the first attempt's insert was rolled back with its failed transaction
            assert rows(engine, accounts) == [("credit", 5), ("debit", -5)]
            assert out == [
                {"entry": "debit", "key": "t-1:debit", "attempt": 2},
                {"entry": "credit", "key": "t-1:credit", "attempt": 1},
            ]
            timeline = await engine.get_timeline(run.id)
            assert [t.transactional for t in timeline] == [True, True]
            assert [len(t.attempts) for t in timeline] == [2, 1]

    asyncio.run(main())
    assert wf_flows.CALLS["debit"] == 2


def test_transactional_step_is_exactly_once_across_a_crash(
    make_engine: Make, accounts: sa.Table
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[debit_workflow(accounts, crash_after_insert=1)]) as e:
            run = await e.start_workflow("transfer", run_id="t-2")
            with pytest.raises(Crash):
                await e.wait_for_run(run.id)
            assert rows(e, accounts) == [("debit", -5)]  # the crashed insert never committed
        async with make_engine(workflows=[debit_workflow(accounts)]) as engine:
            assert (await engine.wait_for_run("t-2", timeout=30)).status == "completed"
            assert rows(engine, accounts) == [("credit", 5), ("debit", -5)]

    asyncio.run(main())
    assert wf_flows.CALLS["credit"] == 2  # ran twice, committed once


def test_crash_right_after_a_transactional_commit_does_not_repeat_it(
    make_engine: Make, accounts: sa.Table
) -> None:
    async def main() -> None:
        # writes: retry row of debit (1), debit (2), credit (3): crash after credit commits
        with crash_at_write(3, after_commit=True):
            async with make_engine(workflows=[debit_workflow(accounts)]) as e:
                run = await e.start_workflow("transfer", run_id="t-3")
                with pytest.raises(Crash):
                    await e.wait_for_run(run.id)
        async with make_engine(workflows=[debit_workflow(accounts)]) as engine:
            assert (await engine.wait_for_run("t-3", timeout=30)).status == "completed"
            assert rows(engine, accounts) == [("credit", 5), ("debit", -5)]

    asyncio.run(main())
    assert wf_flows.CALLS["credit"] == 1


def test_idempotency_key_is_stable_across_attempts(make_engine: Make) -> None:
    seen: list[tuple[str, int]] = []

    def charge() -> str:
        step = durable.current_step()
        assert step is not None
        seen.append((step.idempotency_key, step.attempt))
        if step.attempt < 3:
            raise TimeoutError("payment API timed out")
        return "charged"

    @durable.workflow("charge")
    async def charge_wf(ctx: durable.Context[None]) -> str:
        assert ctx.idempotency_key("charge") == f"{ctx.run_id}:charge"
        return await ctx.step.run("charge", charge, retries=3, retry_delay=0)

    async def main() -> None:
        async with make_engine(workflows=[charge_wf]) as engine:
            assert await engine.result((await engine.start_workflow(charge_wf, run_id="r9")).id)
        assert durable.current_step() is None

    asyncio.run(main())
    assert seen == [("r9:charge", 1), ("r9:charge", 2), ("r9:charge", 3)]


def saga(fail_hotel: bool) -> durable.Workflow[Any, Any]:
    def book(what: str) -> str:
        wf_flows.CALLS[f"book-{what}"] += 1
        if what == "hotel" and fail_hotel:
            raise durable.NonRetryableError("no rooms left")
        return f"{what}-123"

    def cancel(booking: str) -> str:
        wf_flows.CALLS[f"cancel-{booking}"] += 1
        return f"cancelled {booking}"

    @durable.workflow("trip")
    async def trip(ctx: durable.Context[None]) -> dict[str, Any]:
        flight = await ctx.step.run("book-flight", book, "flight")
        try:
            hotel = await ctx.step.run("book-hotel", book, "hotel")
        except durable.StepFailed as exc:
            undone = await ctx.step.run("cancel-flight", cancel, flight)
            return {"status": "rolled back", "reason": exc.error_message, "undone": undone}
        return {"status": "booked", "flight": flight, "hotel": hotel}

    return trip


def test_step_failed_lets_the_workflow_compensate_and_replays(make_engine: Make) -> None:
    async def main() -> None:
        with crash_at_write(3, after_commit=False):  # flight, hotel failed; crash at cancel
            async with make_engine(workflows=[saga(fail_hotel=True)]) as engine:
                run = await engine.start_workflow("trip", run_id="trip-1")
                with pytest.raises(Crash):
                    await engine.wait_for_run(run.id)
        async with make_engine(workflows=[saga(fail_hotel=True)]) as engine:
            out = await engine.result("trip-1", timeout=30)
            assert out == {
                "status": "rolled back",
                "reason": "no rooms left",
                "undone": "cancelled flight-123",
            }
            kinds = [(r.kind, r.key) for r in engine.engine.history("trip-1")]
            assert kinds == [
                ("create", None),
                ("step", "book-flight"),
                ("step_failed", "book-hotel"),
                ("recover", None),
                ("step", "cancel-flight"),
                ("completed", None),
            ]
            progress = await engine.check_progress("trip-1")
            assert progress.approximate  # the compensation is a branch

    asyncio.run(main())
    # the failed hotel booking was replayed from the log, not attempted again
    assert wf_flows.CALLS["book-hotel"] == 1
    assert wf_flows.CALLS["book-flight"] == 1
    assert wf_flows.CALLS["cancel-flight-123"] == 2  # the crash hit before its row committed


def test_pipeline_pipes_outputs_retries_and_resumes_by_run_id(make_engine: Make) -> None:
    wf = durable.Pipeline("article")

    @wf.step("research")
    async def research(topic: str, depth: int) -> str:
        wf_flows.CALLS["research"] += 1
        return f"notes on {topic} x{depth}"

    @wf.step("draft", retries=3, retry_delay=0)
    def draft(notes: str) -> str:
        wf_flows.CALLS["draft"] += 1
        if wf_flows.CALLS["draft"] < 3:
            raise ConnectionError("429 from the LLM")
        return f"article from {notes}"

    @wf.step("publish", timeout=30)
    async def publish(text: str) -> str:
        wf_flows.CALLS["publish"] += 1
        return f"Published: {text}"

    with pytest.raises(durable.WorkflowDefinitionError, match="already has"):
        wf.step("draft")

    async def main() -> None:
        with crash_at_write(4, after_commit=False):  # research, 2 retries of draft, crash
            async with make_engine(workflows=[wf]) as engine:
                with pytest.raises(Crash):
                    await wf.run(engine, run_id="article-1", topic="quantum", depth=2)
        async with make_engine(workflows=[wf], recover=False) as engine:
            out = await wf.run(engine, run_id="article-1")
            assert out == "Published: article from notes on quantum x2"
            assert await wf.run(engine, run_id="article-1") == out  # finished: just the output
            progress = await engine.check_progress("article-1")
            assert (progress.total_steps, progress.approximate) == (3, False)
            fresh = await wf.run(engine, topic="rust", depth=1)
            assert fresh == "Published: article from notes on rust x1"

    asyncio.run(main())
    assert wf_flows.CALLS["research"] == 2  # once per run: not repeated on resume
    with pytest.raises(durable.WorkflowDefinitionError, match="already registered"):
        wf.step("late")
