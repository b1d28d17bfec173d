"""``statewf runs`` (list, show with a timeline, cancel, trigger, pause, resume,
fast-forward, fork, and ``dlq`` for dead letters) and ``statewf approve`` /
``statewf reject`` for workflow runs.

Loaded by the ``statewf`` command through the ``statewf.cli`` entry-point group.
It needs no workflow code: everything it shows is read from the runs' log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from durable.cli.calling import call
from durable.cli.checks import check, export
from durable.cli.workers import find_workflows
from durable.client import Client
from durable.log.records import RUN_STATUSES, Progress, StepTimeline, WorkflowRun
from statewf.cli import CliContext, echo_json, errors_as_messages, import_app, parse_json
from statewf.records import Page, TransitionRecord


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def show_run(run: WorkflowRun, progress: Progress, timeline: list[StepTimeline]) -> None:
    """Print a run, its progress and its step timeline for a person."""
    click.echo(f"run       {run.id}")
    click.echo(f"workflow  {run.workflow} (version {run.version})")
    total = progress.total_steps if progress.total_steps is not None else "?"
    approx = " (approximate)" if progress.approximate else ""
    click.echo(
        f"status    {run.status}   steps {progress.completed_steps}/{total}{approx}   "
        f"{progress.completion_percentage:.0f}%"
    )
    if run.resource_id:
        click.echo(f"resource  {run.resource_id}")
    if run.idempotency_key:
        click.echo(f"key       {run.idempotency_key}")
    click.echo(f"created   {run.created_at:%Y-%m-%d %H:%M:%S}   updated {run.updated_at:%H:%M:%S}")
    click.echo(f"input     {_short(run.input, 80)}")
    if run.output is not None:
        click.echo(f"output    {_short(run.output, 80)}")
    if run.waiting is not None:
        on = run.waiting.get("event") or run.waiting.get("kind")
        until = run.waiting.get("until") or run.waiting.get("timeout_at")
        click.echo(
            f"waiting   at {run.waiting.get('key', '(paused)')!s}: {on}"
            + (f" until {until}" if until else "")
        )
    if run.error is not None:
        where = f" in step {run.error.step!r}" if run.error.step else ""
        click.echo(f"error     {run.error.type}{where}: {run.error.message}")
    if not timeline:
        return
    click.echo("timeline")
    for step in timeline:
        ms = sum(a.duration_ms or 0.0 for a in step.attempts)
        tx = " [tx]" if step.transactional else ""
        outcome = _short(step.result, 40) if step.status == "completed" else ""
        if step.error is not None:
            outcome = f"{step.error.type}: {step.error.message}"
        click.echo(
            f"  {step.position:>3}  {step.key:<24} {step.status:<9} "
            f"attempts={len(step.attempts)}  {ms:8.1f} ms{tx}  {outcome}"
        )
        for attempt in step.attempts:
            if attempt.error is not None and attempt is not step.attempts[-1]:
                retry = f", retry at {attempt.retry_at:%H:%M:%S}" if attempt.retry_at else ""
                click.echo(
                    f"         attempt {attempt.attempt}: {attempt.error.type}: "
                    f"{attempt.error.message}{retry}"
                )


@click.group()
def runs() -> None:
    """Workflow runs: list, show, cancel, trigger, pause, resume, fast-forward, fork, dlq."""


runs.add_command(check)
runs.add_command(export)


def _served(app_specs: tuple[str, ...]) -> set[tuple[str, str]]:
    """The (workflow, version) pairs the code in ``--app`` modules registers."""
    with errors_as_messages():
        return {(w.name, w.version) for a in app_specs for w in find_workflows(import_app(a))}


@runs.command("list")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs in this status.")
@click.option("--resource", "resource_id", help="Only runs of this resource.")
@click.option(
    "--patch",
    "patch_id",
    help="Only runs whose log records the OLD branch of ctx.patched(PATCH): they depend on "
    "the code without the patch. Runs of any status are listed: the in-progress ones "
    "(running, waiting, paused, failed, dead) still replay that branch. Runs started before "
    "the patch that have not resumed since have no answer yet: `statewf runs check` shows "
    "theirs. No in-progress run listed, and none from check: deprecate the patch.",
)
@click.option(
    "--unserved",
    is_flag=True,
    help="Only unfinished runs whose workflow version no --app module registers, or, "
    "without --app, that no live worker serves (nothing running can resume them).",
)
@click.option(
    "--app",
    "app_specs",
    multiple=True,
    help="With --unserved: a module (module:obj, file.py) of deployed workflows (repeatable; "
    "default: statewf's own --app, else what live workers report serving).",
)
@click.option("--limit", default=50, show_default=True)
@click.option("--cursor", help="The next-page cursor printed by a previous call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_runs(
    obj: CliContext,
    workflow: str | None,
    status: str | None,
    resource_id: str | None,
    patch_id: str | None,
    unserved: bool,
    app_specs: tuple[str, ...],
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List runs, oldest first (--patch: runs on a patch's old branch; --unserved: runs no
    deployed code serves)."""
    app_specs = app_specs or ((obj.app,) if obj.app else ())
    if patch_id is not None or unserved:
        # without code named, "served" is what the live workers report serving
        served = _served(app_specs) if app_specs else None

        async def chosen(c: Client) -> list[WorkflowRun]:
            if not patch_id:
                return await c.unserved_runs(served, limit=limit)
            found = await c.on_old_branch(patch_id)
            if unserved:
                stuck = {r.id for r in await c.unserved_runs(served, limit=100_000)}
                found = [r for r in found if r.id in stuck]
            return found

        picked = [
            r
            for r in call(obj, chosen)
            if (workflow is None or r.workflow == workflow)
            and (status is None or r.status == status)
            and (resource_id is None or r.resource_id == resource_id)
        ][:limit]
        page = Page[WorkflowRun](items=picked)
    else:
        page = call(
            obj,
            lambda e: e.get_runs(
                workflow=workflow,
                status=status,
                resource_id=resource_id,
                limit=limit,
                cursor=cursor,
            ),
        )
    if as_json:
        echo_json(page.model_dump(mode="json"))
        return
    for run in page.items:
        click.echo(
            f"{run.id}  {run.workflow:<20} v{run.version:<4} {run.status:<9} "
            f"steps={run.completed_steps:<4} {run.created_at:%Y-%m-%d %H:%M:%S}"
            + (f"  resource={run.resource_id}" if run.resource_id else "")
            + ("  UNSERVED" if unserved else "")
            + (f"  old branch of {patch_id!r}" if patch_id else "")
        )
    if not page.items:
        click.echo("no runs")
    if page.next_cursor:
        click.echo(f"next page: --cursor {page.next_cursor}")


@runs.command("show")
@click.argument("run_id")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.option(
    "--app",
    "app_specs",
    multiple=True,
    help="A module of deployed workflows (repeatable): say whether they serve the run's version.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(
    obj: CliContext, run_id: str, resource_id: str | None, app_specs: tuple[str, ...], as_json: bool
) -> None:
    """Show a run: status, input, output or error, progress and the step timeline."""
    served = _served(app_specs) if app_specs else None

    async def fetch(e: Client) -> tuple[WorkflowRun, Progress, list[StepTimeline]]:
        return (
            await e.get_run(run_id, resource_id=resource_id),
            await e.check_progress(run_id, resource_id=resource_id),
            await e.get_timeline(run_id, resource_id=resource_id),
        )

    run, progress, timeline = call(obj, fetch)
    is_served = None if served is None else (run.workflow, run.version) in served
    if as_json:
        echo_json(
            {
                "run": run.model_dump(mode="json"),
                "progress": progress.model_dump(mode="json"),
                "timeline": [t.model_dump(mode="json") for t in timeline],
                **({} if is_served is None else {"served": is_served}),
            }
        )
        return
    show_run(run, progress, timeline)
    if is_served is False:
        click.echo(
            f"UNSERVED  no --app module registers {run.workflow!r} version {run.version!r}: "
            "deploy that version's code (keep it registered) or nothing resumes this run"
        )


@runs.command("cancel")
@click.argument("run_id")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.option("--reason", help="Recorded with the cancel row.")
@click.pass_obj
def cancel(obj: CliContext, run_id: str, resource_id: str | None, reason: str | None) -> None:
    """Cancel a run (it stops at its next step boundary)."""
    run = call(obj, lambda e: e.cancel_workflow(run_id, resource_id=resource_id, reason=reason))
    click.echo(f"run {run.id} is {run.status}")


@runs.command("trigger")
@click.argument("run_id")
@click.argument("event")
@click.option("--data", help="Event data as JSON.")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def trigger(
    obj: CliContext, run_id: str, event: str, data: str | None, resource_id: str | None
) -> None:
    """Send EVENT (with --data) to a run; a waiting run is woken by its scheduler."""
    payload = parse_json(data, "--data")
    run = call(obj, lambda e: e.trigger_event(run_id, event, payload, resource_id=resource_id))
    click.echo(trigger_reply(run, event))


def trigger_reply(run: WorkflowRun, event: str) -> str:
    """What ``runs trigger`` says: the event was recorded, and what the run does with it."""
    said = f"recorded event {event!r} for run {run.id}"
    waiting = run.waiting or {}
    if run.status == "waiting" and waiting.get("kind") == "wait" and waiting.get("event") == event:
        return (
            f"{said}; the run was waiting for it at step {waiting.get('key')!r} and is "
            "now due: a worker of its workflow takes it up"
        )
    if run.status == "paused":
        return (
            f"{said}; the run is paused: once resumed (statewf runs resume {run.id}) its "
            f"next wait for {event!r} takes it"
        )
    return (
        f"{said}; the run ({run.status}) is not waiting for it now: the event is kept "
        f"for its next wait for {event!r}"
    )


@runs.command("pause")
@click.argument("run_id")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def pause(obj: CliContext, run_id: str, resource_id: str | None) -> None:
    """Pause a run (it stops at its next step boundary)."""
    run = call(obj, lambda e: e.pause_workflow(run_id, resource_id=resource_id))
    click.echo(f"run {run.id} is {run.status}")


@runs.command("resume")
@click.argument("run_id")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def resume(obj: CliContext, run_id: str, resource_id: str | None) -> None:
    """Resume a paused run (a scheduler picks it up)."""
    run = call(obj, lambda e: e.resume_workflow(run_id, resource_id=resource_id))
    click.echo(f"run {run.id} is {run.status}")


@runs.command("fast-forward")
@click.argument("run_id")
@click.option("--data", help="Data for the wait (an event's data, a poll's result), as JSON.")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def fast_forward(obj: CliContext, run_id: str, data: str | None, resource_id: str | None) -> None:
    """Satisfy whatever the run waits on now (sleep, event, poll, pause)."""
    payload = parse_json(data, "--data")
    run = call(obj, lambda e: e.fast_forward_workflow(run_id, payload, resource_id=resource_id))
    click.echo(f"run {run.id} is {run.status}")


@runs.command("fork")
@click.argument("run_id")
@click.option("--from-step", "from_step", required=True, help="The first step the fork executes.")
@click.option("--new-id", "new_id", help="The new run's id (default: a generated one).")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def fork(
    obj: CliContext, run_id: str, from_step: str, new_id: str | None, resource_id: str | None
) -> None:
    """Start a new run of RUN_ID's workflow and input that replays the steps before --from-step."""
    run = call(
        obj,
        lambda e: e.fork_run(
            run_id, from_step=from_step, new_run_id=new_id, resource_id=resource_id
        ),
    )
    click.echo(
        f"forked run {run_id} from step {from_step!r} as {run.id}; it is {run.status} "
        f"with {run.completed_steps} step(s) copied, for an engine or worker of "
        f"{run.workflow!r} to execute"
    )


@runs.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, retry or discard dead (and failed) runs."""


@dlq.command("list")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--no-failed", "no_failed", is_flag=True, help="Only dead runs, not failed ones.")
@click.option("--resource", "resource_id", help="Only runs of this resource.")
@click.option("--limit", default=50, show_default=True)
@click.option("--cursor", help="The next-page cursor printed by a previous call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def dlq_list(
    obj: CliContext,
    workflow: str | None,
    no_failed: bool,
    resource_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List dead and failed runs, oldest first, with their errors."""
    page = call(
        obj,
        lambda e: e.dead_letters(
            workflow=workflow,
            include_failed=not no_failed,
            resource_id=resource_id,
            limit=limit,
            cursor=cursor,
        ),
    )
    if as_json:
        echo_json(page.model_dump(mode="json"))
        return
    for run in page.items:
        what = ""
        if run.error is not None:
            error = run.error
            where = f" in {error.step!r}" if error.step else ""
            message = error.message if len(error.message) <= 60 else error.message[:57] + "..."
            what = f"{error.type}{where}: {message}"
        click.echo(
            f"{run.id}  {run.workflow:<20} {run.status:<6} {run.updated_at:%Y-%m-%d %H:%M:%S}  "
            + what
        )
    if not page.items:
        click.echo("no dead runs" if no_failed else "no dead or failed runs")
    if page.next_cursor:
        click.echo(f"next page: --cursor {page.next_cursor}")


@dlq.command("show")
@click.argument("run_id")
@click.option("--rows", default=10, show_default=True, help="How many of the last log rows.")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def dlq_show(
    obj: CliContext, run_id: str, rows: int, resource_id: str | None, as_json: bool
) -> None:
    """Show a dead or failed run: status, error, step timeline and its last log rows."""

    async def fetch(
        e: Client,
    ) -> tuple[WorkflowRun, Progress, list[StepTimeline], list[TransitionRecord]]:
        run = await e.get_run(run_id, resource_id=resource_id)
        records = await asyncio.to_thread(e.engine.history, run_id)
        return (
            run,
            await e.check_progress(run_id, resource_id=resource_id),
            await e.get_timeline(run_id, resource_id=resource_id),
            records[-rows:] if rows > 0 else [],
        )

    run, progress, timeline, last = call(obj, fetch)
    if as_json:
        echo_json(
            {
                "run": run.model_dump(mode="json"),
                "timeline": [t.model_dump(mode="json") for t in timeline],
                "last_rows": [r.model_dump(mode="json") for r in last],
            }
        )
        return
    show_run(run, progress, timeline)
    click.echo(f"last {len(last)} log rows")
    for record in last:
        what = record.key or record.event or ""
        click.echo(
            f"  {record.seq:>4}  {record.created_at:%H:%M:%S}  {record.kind:<12} "
            f"{record.status:<9} {what:<20} {_short(record.meta, 70)}"
        )


@dlq.command("retry")
@click.argument("run_id")
@click.option("--reason", help="Recorded with the retry_run row.")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def dlq_retry(obj: CliContext, run_id: str, reason: str | None, resource_id: str | None) -> None:
    """Retry a dead or failed run from its failed step (earlier steps are not executed again)."""
    run = call(obj, lambda e: e.retry_run(run_id, reason=reason, resource_id=resource_id))
    click.echo(
        f"run {run.id} is {run.status}: an engine or worker of {run.workflow!r} "
        "will go on from its failed step"
    )


@dlq.command("discard")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why (recorded with the discard row).")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def dlq_discard(obj: CliContext, run_id: str, reason: str, resource_id: str | None) -> None:
    """Discard a dead or failed run: it becomes cancelled, for good."""
    run = call(obj, lambda e: e.discard_run(run_id, reason=reason, resource_id=resource_id))
    click.echo(f"run {run.id} is {run.status} (discarded: {reason})")


@click.command()
@click.argument("run_id")
@click.option("--reviewer", required=True, help="Who approves (recorded in the log).")
@click.option("--comment", help="Why (recorded in the log).")
@click.option("--step", help="The approval step's key (default: the one the run waits on).")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def approve(
    obj: CliContext,
    run_id: str,
    reviewer: str,
    comment: str | None,
    step: str | None,
    resource_id: str | None,
) -> None:
    """Approve a run's pending approval step."""
    run = call(
        obj,
        lambda e: e.approve(
            run_id, reviewer=reviewer, comment=comment, step=step, resource_id=resource_id
        ),
    )
    click.echo(f"approved run {run.id} as {reviewer}; it is {run.status}")


@click.command()
@click.argument("run_id")
@click.option("--reviewer", required=True, help="Who rejects (recorded in the log).")
@click.option("--reason", required=True, help="Why (recorded in the log; the workflow sees it).")
@click.option("--step", help="The approval step's key (default: the one the run waits on).")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def reject(
    obj: CliContext,
    run_id: str,
    reviewer: str,
    reason: str,
    step: str | None,
    resource_id: str | None,
) -> None:
    """Reject a run's pending approval step."""
    run = call(
        obj,
        lambda e: e.reject(
            run_id, reviewer=reviewer, reason=reason, step=step, resource_id=resource_id
        ),
    )
    click.echo(f"rejected run {run.id} as {reviewer}; it is {run.status}")
