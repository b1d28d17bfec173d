"""``statewf runs check`` (replay stored runs or exported histories against new code, a
deploy gate) and ``statewf runs export`` (a run's history as a JSON file).

``runs check`` imports the workflow code (``--app``) but executes none of it beyond
the workflow functions themselves: every step's outcome comes from the log.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from durable.authoring.workflow import Workflow
from durable.cli.calling import call
from durable.cli.workers import find_workflows
from durable.client import Client
from durable.log.export import RunHistory, load_history
from durable.log.records import RUN_STATUSES
from durable.testing import ReplayResult, replay_async
from statewf.cli import CliContext, echo_json, errors_as_messages, import_app
from statewf.durations import parse_instant

#: What ``runs check`` replays by default: every run that may still execute.
CHECKED_BY_DEFAULT = ("pending", "running", "waiting", "paused", "failed", "dead")


@dataclass(frozen=True)
class Problem:
    """A run that new code cannot take up: it diverged, or no code has its version."""

    run_id: str
    workflow: str
    version: str
    text: str

    def as_json(self) -> dict[str, Any]:
        """The problem as JSON data."""
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "version": self.version,
            "problem": self.text,
        }


def _describe(result: ReplayResult) -> str:
    d = result.divergence
    assert d is not None
    where = f"at step position {d.position}" if d.position is not None else "at its end"
    said = (
        f"the log recorded {d.recorded or 'nothing'}, the code asks for {d.requested or 'nothing'}"
    )
    return f"diverged {where}: {said}\n    {d.message}"


async def _check_one(
    codes: dict[tuple[str, str], Workflow[Any, Any]], history: RunHistory
) -> tuple[ReplayResult | None, Problem | None]:
    code = codes.get((history.workflow, history.version))
    if code is None:
        known = sorted(v for n, v in codes if n == history.workflow)
        return None, Problem(
            history.run_id,
            history.workflow,
            history.version,
            f"no code for version {history.version!r} of {history.workflow!r} in the app "
            f"(it has {', '.join(map(repr, known)) or 'no version'}): the run would stay "
            "unserved; keep that version registered until its runs finish",
        )
    result = await replay_async(code, history)
    if result.ok:
        return result, None
    return result, Problem(history.run_id, history.workflow, history.version, _describe(result))


async def _stored(
    client: Client, workflow: str | None, statuses: Sequence[str], since: datetime | None
) -> list[RunHistory]:
    found: list[RunHistory] = []
    cursor: str | None = None
    while True:
        page = await client.get_runs(
            workflow=workflow, status=list(statuses), created_after=since, limit=200, cursor=cursor
        )
        for run in page.items:
            found.append(await client.export_history(run.id))
        cursor = page.next_cursor
        if cursor is None:
            return found


@click.command("check")
@click.option(
    "--app",
    "app_spec",
    help="module, module:obj or file.py[:obj] holding the workflow code to check (every "
    "version it registers); default: statewf's own --app (or STATEWF_APP).",
)
@click.option("--workflow", help="Only runs of this workflow (default: every workflow in --app).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only runs in this status (repeatable; default: all but completed "
    "and cancelled, the runs that may still execute).",
)
@click.option("--since", help="Only runs created at or after this ISO instant (with an offset).")
@click.option(
    "--history",
    "histories",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Check this exported history file instead of stored runs (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def check(
    obj: CliContext,
    app_spec: str | None,
    workflow: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    histories: tuple[str, ...],
    as_json: bool,
) -> None:
    """Replay runs against the code in --app without executing any step: a deploy gate.

    Each run is replayed against the code of its own version; every step's result
    comes from its log, and nothing is written. Exits 0 when every run replays, 1
    when a run diverges (each divergence is printed: the run, the step position,
    what the log recorded and what the code asks for) or has no code for its
    version in --app. The ``patch`` lines count the runs that take the old branch
    of each ``ctx.patched`` (0 everywhere: ready for ``ctx.deprecate_patch``).
    """
    app_spec = app_spec or obj.app
    if not app_spec:
        raise click.UsageError(
            "name the code to check: statewf runs check --app MODULE (or set STATEWF_APP)"
        )
    with errors_as_messages():
        codes = {(wf.name, wf.version): wf for wf in find_workflows(import_app(app_spec))}
        if not codes:
            raise click.UsageError(f"no workflows found in {app_spec!r}")
        if workflow is not None and not any(n == workflow for n, _ in codes):
            raise click.UsageError(f"{app_spec!r} has no workflow {workflow!r}")
        start = parse_instant(since) if since else None

    async def work(client: Client | None) -> list[tuple[ReplayResult | None, Problem | None]]:
        if histories:
            found = [load_history(path) for path in histories]
        else:
            assert client is not None
            found = await _stored(client, workflow, statuses or CHECKED_BY_DEFAULT, start)
        return [await _check_one(codes, h) for h in found]

    if histories:  # no database needed
        with errors_as_messages():
            checked = asyncio.run(work(None))
    else:
        checked = call(obj, work)
    _report(checked, as_json)


def _report(checked: list[tuple[ReplayResult | None, Problem | None]], as_json: bool) -> None:
    problems = [p for _, p in checked if p is not None]
    old: dict[str, int] = {}
    for result, _ in checked:
        for patch, answer in (result.patches if result else {}).items():
            old[patch] = old.get(patch, 0) + (0 if answer else 1)
    if as_json:
        echo_json(
            {
                "checked": len(checked),
                "problems": [p.as_json() for p in problems],
                "old_branch": old,
            }
        )
    else:
        for problem in problems:
            click.echo(
                f"run {problem.run_id} ({problem.workflow} version {problem.version}) "
                f"{problem.text}"
            )
        for patch, count in sorted(old.items()):
            click.echo(f"patch {patch!r}: {count} run(s) take the old branch")
        verdict = f"{len(problems)} cannot be resumed by this code" if problems else "all replay"
        click.echo(f"checked {len(checked)} run(s): {verdict}")
    if problems:
        sys.exit(1)


@click.command("export")
@click.argument("run_id")
@click.option("--resource", "resource_id", help="Only if the run belongs to this resource.")
@click.pass_obj
def export(obj: CliContext, run_id: str, resource_id: str | None) -> None:
    """Print RUN_ID's whole history as JSON (statewf runs export RUN_ID > run.json), for
    ``durable.testing.replay`` in a unit test or ``statewf runs check --history``."""
    history = call(obj, lambda c: c.export_history(run_id, resource_id=resource_id))
    click.echo(history.to_json(), nl=False)
