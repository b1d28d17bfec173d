"""``statewf worker`` (run a worker process) and ``statewf workers`` (list the live ones).

Loaded by the ``statewf`` command through the ``statewf.cli`` entry-point group.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from durable.authoring.pipeline import Pipeline
from durable.authoring.workflow import Workflow
from durable.observe import configure_logging
from durable.worker import Queue, Worker, live_workers
from statewf.cli import CliContext, echo_json, errors_as_messages, find_machines, import_app


def find_workflows(app: Any) -> list[Workflow[Any, Any]]:
    """Workflows in an app: a workflow, a pipeline, a list of them, or a module's top level."""
    if isinstance(app, Workflow):
        return [app]
    if isinstance(app, Pipeline):
        return [app.workflow]
    if isinstance(app, list | tuple):
        return [wf for item in app for wf in find_workflows(item)]
    if isinstance(app, Worker):
        return app.workflow_engine.workflows()
    found: dict[tuple[str, str], Workflow[Any, Any]] = {}
    for value in vars(app).values() if hasattr(app, "__dict__") else ():
        if isinstance(value, Workflow | Pipeline | list | tuple):
            for wf in find_workflows(value):
                found[(wf.name, wf.version)] = wf
    return list(found.values())


def _parse_queue(text: str) -> Queue:
    name, _, limit = text.partition("=")
    if not limit:
        return Queue(name)
    try:
        return Queue(name, int(limit))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write a queue as NAME or NAME=LIMIT") from None


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise click.BadParameter(f"{text!r}: write a label as KEY=VALUE")
    return key, value


@click.command("worker")
@click.option(
    "--app",
    "app_spec",
    help="module, module:obj or file.py[:obj] holding the workflows (or a durable.Worker).",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="A queue to serve (repeatable); NAME=LIMIT caps it across all workers. Default: default.",
)
@click.option("--concurrency", default=16, show_default=True, help="Most runs at once.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE this worker offers.")
@click.option("--resource-concurrency", type=int, help="Most runs at once per resource_id.")
@click.option("--lease", default=30.0, show_default=True, help="Lease seconds.")
@click.option("--poll", default=5.0, show_default=True, help="Seconds between looks for work.")
@click.option("--shutdown-timeout", default=30.0, show_default=True)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_obj
def worker(
    obj: CliContext,
    app_spec: str | None,
    queues: tuple[str, ...],
    concurrency: int,
    labels: tuple[str, ...],
    resource_concurrency: int | None,
    lease: float,
    poll: float,
    shutdown_timeout: float,
    log_format: str,
    log_level: str,
) -> None:
    """Run a worker: claim runs of the app's workflows from the queues and execute them.

    Stops gracefully on SIGTERM or Ctrl-C: running steps finish (up to the shutdown
    timeout), its runs are handed back, and it exits.
    """
    configure_logging(json=log_format == "json", level=log_level.upper())
    spec = app_spec or obj.app
    if spec is None:
        raise click.UsageError("name the workflows: statewf worker --app module[:obj]")
    app = import_app(spec)
    with errors_as_messages():
        if isinstance(app, Worker):
            built = app
        else:
            workflows = find_workflows(app)
            machines = find_machines(app)
            if not workflows and not machines:
                raise click.UsageError(f"no workflows or machines found in {spec!r}")
            built = Worker(
                obj.engine(),
                workflows=workflows,
                machines=machines,
                queues=[_parse_queue(q) for q in queues] or ["default"],
                concurrency=concurrency,
                labels=dict(_parse_label(label) for label in labels),
                resource_concurrency=resource_concurrency,
                lease=lease,
                poll_interval=poll,
                shutdown_timeout=shutdown_timeout,
            )
        asyncio.run(built.run())


@click.command("workers")
@click.option("--within", default=120.0, show_default=True, help="Heartbeat within seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def workers(obj: CliContext, within: float, as_json: bool) -> None:
    """List live workers: their queues, labels, last heartbeat and the runs they hold."""
    with errors_as_messages():
        rows = live_workers(obj.engine(), within=within)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no worker heart-beat in the last {within:g}s")
        return
    for row in rows:
        labels = ",".join(f"{k}={v}" for k, v in (row["labels"] or {}).items()) or "-"
        click.echo(
            f"{row['id']}  queues={','.join(row['queues'])}  labels={labels}  "
            f"held={row['held']}/{row['concurrency']}  "
            f"heartbeat={row['heartbeat_at'].isoformat(timespec='seconds')}"
        )
