"""``statewf instances ...``: machine instances in bulk (counts per version, migrations).

Loaded by the ``statewf`` command through the ``statewf.cli`` entry-point group, like
the other command groups.
"""

from __future__ import annotations

from typing import Any

import click

from statewf.browse import state_counts
from statewf.cli import CliContext, echo_json, errors_as_messages, import_app
from statewf.migrate import MigrationReport, Unmigrated, migrate_machine

_MAP_HELP = "OLD=NEW: instances in state OLD go to state NEW (repeat for more states)."


@click.group()
def instances() -> None:
    """Machine instances in bulk: counts per version and state, migrations between versions."""


@instances.command("counts")
@click.option("--machine", help="Only this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def counts(obj: CliContext, machine: str | None, as_json: bool) -> None:
    """How many instances each machine version has in each state (needs --app to tell
    which versions are registered)."""
    with errors_as_messages():
        rows = state_counts(obj.engine(), machine=machine)
    if as_json:
        echo_json([r.model_dump() for r in rows])
        return
    if not rows:
        click.echo("no machine instances")
    for r in rows:
        known = "" if r.registered else "  (version not registered: pass --app, or migrate)"
        click.echo(f"{r.count:>8}  {r.machine}@{r.version}  {r.state:<24} {r.status}{known}")


def _state_map(pairs: tuple[str, ...]) -> dict[str, str | list[str]]:
    """``--map OLD=NEW`` options as a state map (NEW may list states: ``a,b``)."""
    found: dict[str, str | list[str]] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(
                f"{pair!r} is not OLD=NEW (for example --map late=delayed)", param_hint="--map"
            )
        found[old] = new.split(",") if "," in new else new
    return found


def _upgrade(spec: str | None) -> Any:
    """The ``--upgrade module:function`` callable, or None."""
    if spec is None:
        return None
    if ":" not in spec:
        raise click.BadParameter(
            f"{spec!r} does not name a function; pass module:function or path/to/file.py:function",
            param_hint="--upgrade",
        )
    function = import_app(spec)
    if not callable(function):
        raise click.BadParameter(f"{spec!r} is not callable", param_hint="--upgrade")
    return function


def _command(
    machine: str, from_version: str, to_version: str, pairs: tuple[str, ...], app: str | None
) -> str:
    maps = "".join(f" --map {p}" for p in pairs)
    versions = f"--from {from_version} --to {to_version}"
    prefix = f"statewf --app {app}" if app else "statewf"
    return f"{prefix} instances migrate --machine {machine} {versions}{maps}"


def _show(
    report: MigrationReport, pairs: tuple[str, ...], upgrade: str | None, app: str | None
) -> None:
    verb = "would move" if report.dry_run else "moved"
    title = f"machine {report.machine}: version {report.from_version} -> {report.to_version}"
    click.echo(title + ("  (dry run: nothing changed)" if report.dry_run else ""))
    if not report.moves and not report.failures:
        click.echo(f"  no instances of {report.machine} version {report.from_version}")
    for move in report.moves:
        click.echo(f"  {move.count:>6}  {move.from_state} -> {move.to_state}")
    click.echo(f"{report.migrated} instance(s) {verb} to version {report.to_version}")
    if not report.failures:
        if report.dry_run and report.moves:
            click.echo("to migrate them, run the same command without --dry-run")
        return
    groups: dict[tuple[str, str, str], list[Unmigrated]] = {}
    for failure in report.failures:
        groups.setdefault((failure.state, failure.reason, failure.next), []).append(failure)
    would = "would not migrate" if report.dry_run else "not migrated"
    click.echo(f"{len(report.failures)} instance(s) {would}:")
    for (state, reason, hint), items in groups.items():
        ids = ", ".join(f.instance_id for f in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        click.echo(f"  {len(items):>6}  in {state}: {reason}")
        click.echo(f"          ids: {ids}{more}")
        click.echo(f"          next: {hint}")
    command = _command(report.machine, report.from_version, report.to_version, pairs, app)
    extra = f" --upgrade {upgrade}" if upgrade else ""
    click.echo(f"then run again: {command}{extra} --dry-run")


@instances.command("migrate")
@click.option("--machine", required=True, help="The machine whose instances move.")
@click.option("--from", "from_version", required=True, help="The version they are on.")
@click.option("--to", "to_version", required=True, help="The version they move to.")
@click.option("--map", "pairs", multiple=True, metavar="OLD=NEW", help=_MAP_HELP)
@click.option(
    "--upgrade",
    help="module:function (or path/to/file.py:function) turning an old context into a new one.",
)
@click.option("--reason", help="Why: kept in each instance's migration row.")
@click.option("--dry-run", is_flag=True, help="Report what would move where; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def migrate(
    obj: CliContext,
    machine: str,
    from_version: str,
    to_version: str,
    pairs: tuple[str, ...],
    upgrade: str | None,
    reason: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Move every instance of MACHINE version FROM to version TO (needs --app defining TO).

    Exits with status 1 when any instance could not be migrated (or, with --dry-run,
    would not be), saying what to add to the command.
    """
    state_map = _state_map(pairs)
    function = _upgrade(upgrade)
    with errors_as_messages():
        report = migrate_machine(
            obj.engine(),
            machine,
            from_version,
            to_version,
            state_map=state_map,
            context=function,
            dry_run=dry_run,
            reason=reason,
        )
    if as_json:
        echo_json({**report.model_dump(), "migrated": report.migrated})
    else:
        _show(report, pairs, upgrade, obj.app)
    if report.failures:
        raise SystemExit(1)
