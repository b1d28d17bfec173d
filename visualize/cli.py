"""``statewf diagram``: draw a machine, an instance, a history or a workflow run.

Plugged into the ``statewf`` command through the ``statewf.cli`` entry point.
Machines come from ``--app`` when given, else from the definitions stored in the
database, so the command draws machines without the application's code.
"""

from __future__ import annotations

import click

from statewf.cli import CliContext, errors_as_messages
from visualize.api import definition_for, history_diagram, instance_diagram, machine_diagram
from visualize.diagram import Diagram
from visualize.run import run_diagram

FORMAT_CHOICES = ("dot", "mermaid", "svg", "png", "pdf")


@click.command()
@click.argument("machine", required=False)
@click.option("--instance", "instance_id", help="Draw this instance with its current state.")
@click.option("--history", "history_id", help="Draw the path this instance took.")
@click.option("--run", "run_id", help="Draw this workflow run's steps and their status.")
@click.option("--seq", type=int, help="With --instance/--history: as of transition SEQ.")
@click.option(
    "--resource", "resource_id", help="Only if the instance or run belongs to this resource."
)
@click.option("--version", "machine_version", help="With MACHINE: this version (default latest).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file.")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    help="Output format (default: from the -o suffix, else dot).",
)
@click.pass_obj
def diagram(
    obj: CliContext,
    machine: str | None,
    instance_id: str | None,
    history_id: str | None,
    run_id: str | None,
    seq: int | None,
    resource_id: str | None,
    machine_version: str | None,
    output: str | None,
    fmt: str | None,
) -> None:
    """Draw MACHINE, an --instance, a --history or a --run as DOT, Mermaid, SVG, PNG or PDF.

    Without -o the text (dot, mermaid or svg) goes to stdout.
    """
    chosen = [x for x in (machine, instance_id, history_id, run_id) if x is not None]
    if len(chosen) != 1:
        raise click.UsageError(
            "name exactly one of MACHINE, --instance ID, --history ID or --run ID"
        )
    if seq is not None and (machine is not None or run_id is not None):
        raise click.UsageError("--seq goes with --instance or --history")
    with errors_as_messages():
        engine = obj.engine()
        result: Diagram
        if instance_id is not None:
            result = instance_diagram(engine, instance_id, seq=seq, resource_id=resource_id)
        elif history_id is not None:
            result = history_diagram(engine, history_id, seq=seq, resource_id=resource_id)
        elif run_id is not None:
            result = run_diagram(engine, run_id, resource_id=resource_id)
        else:
            result = machine_diagram(definition_for(engine, chosen[0], machine_version))
        emit(result, output, fmt)


def emit(result: Diagram, output: str | None, fmt: str | None) -> None:
    """Write the diagram to ``output`` (format from ``fmt`` or the suffix) or print its text."""
    if output is not None:
        path = result.render(output, fmt)
        click.echo(f"wrote {path}", err=True)
        return
    if fmt in ("png", "pdf"):
        raise click.UsageError(f"--format {fmt} is binary; pass -o FILE.{fmt}")
    click.echo(result.text(fmt or "dot"), nl=False)
