"""``statewf tasks list|show|approve|reject|complete``: open human tasks of workflow runs.

A human task is a run waiting in ``ctx.step.approval`` or ``ctx.step.human_task``;
its prompt, context, assignee and answer schema are stored with the wait, so this
needs no workflow code (answers are checked against the stored JSON Schema).
"""

from __future__ import annotations

import json

import click

from durable.cli.calling import call
from durable.cli.runs import reject as reject_approval
from durable.log.records import HumanTask
from statewf.cli import CliContext, echo_json, parse_json

_RESOURCE = click.option("--resource", "resource_id", help="Only tasks of runs of this resource.")


@click.group()
def tasks() -> None:
    """Open human tasks (approvals and human_task steps): list, show, approve, reject, complete."""


@tasks.command("list")
@click.option("--assignee", help="Only tasks assigned to this person.")
@click.option("--workflow", help="Only tasks of runs of this workflow.")
@_RESOURCE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_tasks(
    obj: CliContext,
    assignee: str | None,
    workflow: str | None,
    resource_id: str | None,
    as_json: bool,
) -> None:
    """List the open tasks, oldest first."""
    found = call(
        obj, lambda c: c.tasks(assignee=assignee, resource_id=resource_id, workflow=workflow)
    )
    if as_json:
        echo_json([t.model_dump(mode="json") for t in found])
        return
    for task in found:
        prompt = (task.prompt or "").replace("\n", " ")
        click.echo(
            f"{task.run_id}  {task.type:<8} {task.key:<16} "
            f"assignee={task.assignee or '-':<16} {prompt[:60]}"
        )
    if not found:
        click.echo("no open tasks")


def show_task(task: HumanTask) -> None:
    """Print a task for the person who resolves it."""
    click.echo(f"run       {task.run_id} ({task.workflow})")
    click.echo(f"task      {task.key} ({task.type})")
    click.echo(f"assignee  {task.assignee or '-'}")
    click.echo(f"since     {task.waiting_since:%Y-%m-%d %H:%M:%S}")
    if task.timeout_at is not None:
        click.echo(f"times out {task.timeout_at:%Y-%m-%d %H:%M:%S}")
    click.echo(f"prompt    {task.prompt or '-'}")
    if task.context is not None:
        click.echo("context   " + json.dumps(task.context, indent=2, ensure_ascii=False))
    if task.answer_schema is not None:
        click.echo("answer    " + json.dumps(task.answer_schema, indent=2, ensure_ascii=False))
    verb = "approve" if task.type == "approval" else "complete"
    data = "--answer JSON " if task.type == "approval" and task.answer_schema else ""
    data = "--data JSON " if task.type == "task" else data
    click.echo(f"resolve:  statewf tasks {verb} {task.run_id} --reviewer YOU {data}".rstrip())


@tasks.command("show")
@click.argument("run_id")
@_RESOURCE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(obj: CliContext, run_id: str, resource_id: str | None, as_json: bool) -> None:
    """Show a run's open task: prompt, context, assignee and the answer's schema."""
    task = call(obj, lambda c: c.get_task(run_id, resource_id=resource_id))
    if as_json:
        echo_json(task.model_dump(mode="json"))
        return
    show_task(task)


@tasks.command("approve")
@click.argument("run_id")
@click.option("--reviewer", required=True, help="Who approves (recorded in the log).")
@click.option("--comment", help="Why (recorded in the log).")
@click.option("--answer", help="The answer as JSON (when the approval asks for one).")
@click.option("--step", help="The approval's key (default: the one the run waits on).")
@_RESOURCE
@click.pass_obj
def approve(
    obj: CliContext,
    run_id: str,
    reviewer: str,
    comment: str | None,
    answer: str | None,
    step: str | None,
    resource_id: str | None,
) -> None:
    """Approve a run's open approval."""
    value = parse_json(answer, "--answer")
    run = call(
        obj,
        lambda c: c.approve(
            run_id,
            reviewer=reviewer,
            comment=comment,
            step=step,
            resource_id=resource_id,
            answer=value,
        ),
    )
    click.echo(f"approved run {run.id} as {reviewer}; it is {run.status}")


# Rejecting a task is rejecting the run's approval: the same command as `statewf reject`.
tasks.add_command(reject_approval, "reject")


@tasks.command("complete")
@click.argument("run_id")
@click.option("--reviewer", required=True, help="Who completes it (recorded in the log).")
@click.option("--data", help="The task's answer as JSON (checked against its schema).")
@click.option("--comment", help="Recorded in the log.")
@click.option("--step", help="The task's key (default: the one the run waits on).")
@_RESOURCE
@click.pass_obj
def complete(
    obj: CliContext,
    run_id: str,
    reviewer: str,
    data: str | None,
    comment: str | None,
    step: str | None,
    resource_id: str | None,
) -> None:
    """Complete a run's open human task with --data."""
    value = parse_json(data, "--data")
    run = call(
        obj,
        lambda c: c.complete_task(
            run_id, value, reviewer=reviewer, comment=comment, step=step, resource_id=resource_id
        ),
    )
    click.echo(f"completed task of run {run.id} as {reviewer}; it is {run.status}")
