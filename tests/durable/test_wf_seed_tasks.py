"""Human tasks with their details: approvals and ``human_task`` waits, listed and resolved
by clients and the CLI, answers checked against the stored schema, reviewers in the log."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from wf_flows import Make, until

import durable
import statewf
from statewf import cli
from statewf.testing import ManualClock


class Edits(BaseModel):
    """The answer a reviewer gives with an approval (importable: the worker's code)."""

    headline: str
    score: int


@durable.workflow("publish")
async def publish(ctx: durable.Context[str]) -> dict[str, Any]:
    decision = await ctx.step.approval(
        "review",
        prompt=f"Publish {ctx.input!r}?",
        context={"draft": ctx.input, "words": 3},
        assignee="ed@acme.com",
        schema=Edits,
        timeout="2 days",
    )
    answer = decision.answer
    return {
        "approved": decision.approved,
        "reviewer": decision.reviewer,
        "reason": decision.reason,
        "answer": answer.model_dump() if isinstance(answer, Edits) else answer,
        "typed": isinstance(answer, Edits),
    }


def waiting_key(engine: durable.WorkflowEngine, run_id: str) -> str | None:
    snap = engine.engine.get(run_id)
    if snap.status != "waiting":
        return None
    return (snap.context.get("waiting") or {}).get("key")


def events(engine: durable.WorkflowEngine, run_id: str) -> list[Any]:
    return [r.payload for r in engine.engine.history(run_id) if r.kind == "event"]


def test_an_approval_with_details_is_listed_checked_and_recorded(make_engine: Make) -> None:
    async def main() -> None:
        async with make_engine(workflows=[publish]) as engine:
            run = await engine.start_workflow(publish, "Hello world", resource_id="acme")
            other = await engine.start_workflow(publish, "Other", resource_id="beta")
            for r in (run, other):
                await until(lambda r=r: waiting_key(engine, r.id) == "review", "the review")
            (task,) = await engine.tasks(assignee="ed@acme.com", resource_id="acme")
            assert (task.run_id, task.key, task.type) == (run.id, "review", "approval")
            assert task.prompt == "Publish 'Hello world'?"
            assert task.context == {"draft": "Hello world", "words": 3}
            assert task.answer_schema is not None
            assert task.answer_schema["required"] == ["headline", "score"]
            assert task.timeout_at is not None
            assert await engine.tasks(assignee="someone-else") == []
            assert {t.run_id for t in await engine.tasks()} == {run.id, other.id}
            assert await engine.get_task(run.id) == task

            with pytest.raises(statewf.InvalidPayload, match="asks for an answer fitting Edits"):
                await engine.approve(run.id, reviewer="ed@acme.com")
            refused = r"does not match Edits .*score: Input should be a valid integer"
            with pytest.raises(statewf.InvalidPayload, match=refused):
                await engine.approve(run.id, reviewer="ed", answer={"headline": "x", "score": "hi"})
            assert events(engine, run.id) == []  # nothing recorded for a refused answer

            await engine.approve(
                run.id,
                reviewer="ed@acme.com",
                comment="ship it",
                answer={"headline": "Hi", "score": 9},
            )
            assert await engine.result(run.id, timeout=10) == {
                "approved": True,
                "reviewer": "ed@acme.com",
                "reason": "ship it",
                "answer": {"headline": "Hi", "score": 9},
                "typed": True,
            }
            (event,) = events(engine, run.id)
            assert event["reviewer"] == "ed@acme.com"
            assert event["reason"] == "ship it"
            assert event["answer"] == {"headline": "Hi", "score": 9}

            await engine.reject(other.id, reviewer="legal", reason="needs citations")
            rejected = await engine.result(other.id, timeout=10)
            assert rejected["approved"] is False
            assert rejected["answer"] is None  # a rejection needs no answer
            assert await engine.tasks() == []
            with pytest.raises(
                statewf.InvalidInput, match="not waiting for an approval or a human"
            ):
                await engine.get_task(run.id)

    asyncio.run(main())


def test_a_client_without_the_code_checks_the_answer_by_the_stored_json_schema(
    make_engine: Make, db: dict[str, str | None]
) -> None:
    class Local(BaseModel):  # not importable by path: only its JSON Schema can check
        amount: int

    @durable.workflow("expense")
    async def expense(ctx: durable.Context[None]) -> Any:
        value = await ctx.step.human_task(
            "amount", prompt="How much?", assignee="fin", schema=Local, timeout="1 day"
        )
        return [value.amount, type(value).__name__]

    async def main() -> None:
        async with make_engine(workflows=[expense]) as engine:
            run = await engine.start_workflow(expense)
            await until(lambda: waiting_key(engine, run.id) == "amount", "the task")
            async with durable.Client(statewf.Engine(db["url"], schema=db["schema"])) as client:
                (task,) = await client.tasks(assignee="fin")
                assert task.type == "task"
                with pytest.raises(statewf.InvalidPayload, match=r"data\.data\.amount"):
                    await client.complete_task(run.id, {"amount": "lots"}, reviewer="bo")
                with pytest.raises(statewf.InvalidInput, match="not waiting for an approval"):
                    await client.approve(run.id, reviewer="bo")
                await client.complete_task(run.id, {"amount": 12}, reviewer="bo", comment="ok")
                client.engine.close()
            engine.executor.wake_soon()
            assert await engine.result(run.id, timeout=10) == [12, "Local"]
            (event,) = events(engine, run.id)
            assert event == {"data": {"amount": 12}, "reviewer": "bo", "comment": "ok"}

    asyncio.run(main())


@durable.workflow("ticket")
async def ticket(ctx: durable.Context[None]) -> Any:
    return await ctx.step.human_task(
        "triage", prompt="Which team?", context={"id": 7}, timeout="1 hour", timeout_value="none"
    )


def test_tasks_cli_lists_shows_and_resolves(
    make_engine: Make, db: dict[str, str | None], clock: ManualClock
) -> None:
    cli._load_plugins()
    base = ["--database", str(db["url"])] + (["--schema", db["schema"]] if db["schema"] else [])

    def run_cli(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli.cli, [*base, *args])
        assert result.exit_code == code, result.output
        return result.output

    async def main() -> None:
        async with make_engine(workflows=[publish, ticket], poll_interval=0.05) as engine:
            review = await engine.start_workflow(publish, "Draft")
            triage = await engine.start_workflow(ticket)
            await until(lambda: waiting_key(engine, review.id) == "review", "the review")
            await until(lambda: waiting_key(engine, triage.id) == "triage", "the triage")
            listed = await asyncio.to_thread(run_cli, "tasks", "list")
            assert f"{review.id}  approval review" in listed
            assert "assignee=ed@acme.com" in listed
            assert f"{triage.id}  task     triage" in listed
            mine = await asyncio.to_thread(run_cli, "tasks", "list", "--assignee", "ed@acme.com")
            assert triage.id not in mine
            shown = await asyncio.to_thread(run_cli, "tasks", "show", review.id)
            assert "prompt    Publish 'Draft'?" in shown
            assert '"draft": "Draft"' in shown
            assert '"headline"' in shown  # the answer's schema
            assert f"statewf tasks approve {review.id} --reviewer YOU --answer JSON" in shown
            bad = await asyncio.to_thread(
                run_cli, "tasks", "approve", review.id, "--reviewer", "ed", "--answer", "{}",
                code=1,
            )  # fmt: skip
            assert "InvalidPayload" in bad
            await asyncio.to_thread(
                run_cli, "tasks", "approve", review.id, "--reviewer", "ed",
                "--answer", '{"headline": "H", "score": 1}',
            )  # fmt: skip
            assert (await engine.result(review.id, timeout=10))["answer"] == {
                "headline": "H",
                "score": 1,
            }
            done = await asyncio.to_thread(
                run_cli, "tasks", "complete", triage.id, "--reviewer", "ops", "--data", '"infra"'
            )
            assert done.startswith(f"completed task of run {triage.id} as ops")
            assert await engine.result(triage.id, timeout=10) == "infra"

            late = await engine.start_workflow(ticket)
            await until(lambda: waiting_key(engine, late.id) == "triage", "the triage")
            clock.advance(timedelta(hours=1))
            assert await engine.result(late.id, timeout=10) == "none"  # its timeout_value

    asyncio.run(main())


def test_approvals_inside_a_pipeline(make_engine: Make) -> None:
    wf = durable.Pipeline("content")

    @wf.step("draft")
    def draft(topic: str) -> str:
        return f"an article on {topic}"

    wf.approval("review", prompt=lambda text: f"Approve: {text}", context=lambda t: {"text": t})

    @wf.step("publish")
    def publish_it(text: str) -> str:
        return f"Published: {text}"

    async def main() -> None:
        async with make_engine(workflows=[wf]) as engine:
            yes = await engine.start_workflow(wf, {"topic": "AI"})
            no = await engine.start_workflow(wf, {"topic": "spam"})
            for r in (yes, no):
                await until(lambda r=r: waiting_key(engine, r.id) == "review", "the review")
            task = await engine.get_task(yes.id)
            assert task.prompt == "Approve: an article on AI"
            assert task.context == {"text": "an article on AI"}
            await engine.approve(yes.id, reviewer="editor@acme.com")
            assert await engine.result(yes.id, timeout=10) == "Published: an article on AI"
            await engine.reject(no.id, reviewer="editor@acme.com", reason="off-topic")
            failed = await engine.wait_for_run(no.id)
            assert failed.status == "failed"
            assert failed.error is not None
            assert failed.error.type == "ApprovalRejected"
            assert "rejected by editor@acme.com: off-topic" in failed.error.message
            progress = await engine.check_progress(yes.id)
            assert progress.total_steps == 3

    asyncio.run(main())


def test_bad_task_options_are_refused_when_the_step_is_asked_for(make_engine: Make) -> None:
    @durable.workflow("bad-task")
    async def bad(ctx: durable.Context[str]) -> Any:
        if ctx.input == "schema":
            return await ctx.step.approval("a", schema=dict)  # type: ignore[arg-type]
        if ctx.input == "context":
            return await ctx.step.human_task("t", context={"x": object()})
        return await ctx.step.human_task("t", assignee="")

    async def main() -> None:
        async with make_engine(workflows=[bad]) as engine:
            for case, message in (
                ("schema", "schema must be a pydantic model class"),
                ("context", "context of human task 't'"),
                ("assignee", "assignee must be a non-empty string"),
            ):
                run = await engine.wait_for_run((await engine.start_workflow(bad, case)).id)
                assert run.status == "failed", case
                assert run.error is not None
                assert message in run.error.message, run.error.message

    asyncio.run(main())
