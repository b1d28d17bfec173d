"""The ``statewf`` command line.

Other packages add command groups through the ``statewf.cli`` entry-point group
(``durable`` adds ``runs``, ``visualize`` adds ``diagram``), so this module imports
neither. Every command reads the database from ``--database`` or
``STATEWF_DATABASE_URL`` and finds machines by importing ``--app`` / ``STATEWF_APP``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from statewf.engine import Engine
from statewf.errors import StatewfError
from statewf.records import KIND_MIGRATE, Instance, TransitionRecord
from statewf.spec import Machine
from statewf.values import MAX_DEPTH


class CliContext:
    """Options shared by every command, and the engine built from them on first use."""

    def __init__(
        self, database: str | None, schema: str | None, prefix: str, app: str | None
    ) -> None:
        self.database = database
        self.schema = schema
        self.prefix = prefix
        self.app = app
        self._engine: Engine | None = None
        self._app_module: Any = None

    def app_module(self) -> Any:
        """The imported ``--app`` module (or object), None when no app was named."""
        if self.app is None or self._app_module is not None:
            return self._app_module
        self._app_module = import_app(self.app)
        return self._app_module

    def close(self) -> None:
        """Close the engine, if one was built (called when the command ends)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def engine(self) -> Engine:
        """An engine on the chosen database with the app's machines registered."""
        if self._engine is None:
            engine = Engine(self.database, schema=self.schema, table_prefix=self.prefix)
            for machine in find_machines(self.app_module()):
                engine.register(machine)
            self._engine = engine
        return self._engine


def import_app(spec: str) -> Any:
    """Import ``module``, ``module:attr`` or ``path/to/file.py[:attr]``."""
    target, _, attr = spec.partition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            # Like `python path/to/file.py`: the file's folder is importable, so the
            # app can import its sibling modules.
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
            # a private module name: an app file called json.py must not replace json
            name = f"statewf_app_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(target)
    except (ImportError, OSError) as exc:
        raise click.ClickException(
            f"cannot import app {spec!r}: {exc}; pass --app module.path or path/to/file.py"
        ) from exc
    if attr:
        try:
            return getattr(module, attr)
        except AttributeError:
            raise click.ClickException(f"app module {target!r} has no attribute {attr!r}") from None
    return module


def find_machines(app: Any) -> list[Machine]:
    """Machines in an app: a Machine, a list of them, or a module's top-level Machines."""
    if app is None:
        return []
    if isinstance(app, Machine):
        return [app]
    if isinstance(app, list | tuple):
        return [m for m in app if isinstance(m, Machine)]
    if isinstance(app, Engine):
        return app.machines()
    found: dict[tuple[str, str], Machine] = {}
    for value in vars(app).values():
        for machine in find_machines(value) if isinstance(value, list | tuple) else [value]:
            if isinstance(machine, Machine):
                found[(machine.name, machine.version)] = machine
    return list(found.values())


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Turn statewf errors into a one-line message and exit status 1."""
    try:
        yield
    except StatewfError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc.cli_message}") from exc


def parse_json(text: str | None, what: str) -> Any:
    """Parse a JSON option value, or exit with a message naming the option."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise click.BadParameter(
            f"{what} is nested too deep to read (stored values nest {MAX_DEPTH} levels "
            "at most); flatten it"
        ) from None


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def echo_json(data: Any) -> None:
    """Print data as indented JSON."""
    click.echo(json.dumps(data, indent=2, default=_default, ensure_ascii=False))


def show_instance(instance: Instance, allowed: list[str] | None) -> None:
    """Print an instance for a person."""
    click.echo(f"instance  {instance.id}")
    click.echo(f"machine   {instance.machine} (version {instance.machine_version})")
    click.echo(
        f"state     {instance.state}   status {instance.status}   version {instance.version}"
    )
    if instance.resource_id:
        click.echo(f"resource  {instance.resource_id}")
    if instance.chart:
        for path, state_id in zip(instance.configuration, instance.state_ids, strict=False):
            shown = path if state_id == path else f"{path}  (id {state_id})"
            click.echo(f"active    {shown}")
        for history, paths in instance.history.items():
            click.echo(f"history   {history} = {', '.join(paths)}")
        for timer in instance.timers:
            click.echo(f"timer     {timer.label or timer.id} due {timer.due_at.isoformat()}")
    if allowed is not None:
        click.echo(f"allowed   {', '.join(allowed) or '(none)'}")
    click.echo("context   " + json.dumps(instance.context, ensure_ascii=False, default=_default))


def show_history(records: list[TransitionRecord]) -> None:
    """Print a log as a table."""
    for r in records:
        moved = f"{','.join(r.source) or '-'} -> {','.join(r.target) or '-'}"
        label = r.event or r.key or ""
        if r.kind == KIND_MIGRATE:
            label = f"version {r.meta['from_version']} -> {r.meta['machine_version']}"
        changed = f"  ctx {json.dumps(r.context_set, default=_default)}" if r.context_set else ""
        click.echo(
            f"{r.seq:>4}  {r.created_at:%Y-%m-%d %H:%M:%S}  {r.kind:<8} "
            f"{label:<24} {moved}  [{r.status}]{changed}"
        )
        for step in r.meta.get("microsteps") or ():
            for t in step["transitions"]:
                targets = ",".join(t["targets"]) or "(stays)"
                click.echo(
                    f"{'':>6}microstep {step['event'] or '(eventless)'}: "
                    f"{t['source'] or '(start)'} -> {targets}"
                )
            if step["exited"]:
                click.echo(f"{'':>8}exited  {', '.join(step['exited'])}")
            if step["entered"]:
                click.echo(f"{'':>8}entered {', '.join(step['entered'])}")


@click.group()
@click.option(
    "--database",
    "-d",
    envvar="STATEWF_DATABASE_URL",
    help="SQLAlchemy URL (default sqlite:///statewf.db; env STATEWF_DATABASE_URL).",
)
@click.option("--schema", envvar="STATEWF_SCHEMA", help="PostgreSQL schema of statewf's tables.")
@click.option(
    "--prefix",
    envvar="STATEWF_TABLE_PREFIX",
    default="statewf_",
    show_default=True,
    help="Table-name prefix.",
)
@click.option(
    "--app",
    "-a",
    envvar="STATEWF_APP",
    help="Module or file defining your machines (module:attr allowed; env STATEWF_APP).",
)
@click.version_option(package_name="statewf")
@click.pass_context
def cli(
    ctx: click.Context, database: str | None, schema: str | None, prefix: str, app: str | None
) -> None:
    """statewf: durable state machines and workflows on PostgreSQL or SQLite."""
    ctx.obj = CliContext(database, schema, prefix, app)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.pass_obj
def migrate(obj: CliContext) -> None:
    """Create or upgrade statewf's tables."""
    with errors_as_messages():
        engine = Engine(obj.database, schema=obj.schema, table_prefix=obj.prefix, migrate=False)
        try:
            applied = engine.store.migrate()
        finally:
            engine.close()
    click.echo(f"applied migrations {applied}" if applied else "schema is up to date")


@cli.command()
@click.pass_obj
def machines(obj: CliContext) -> None:
    """List machine definitions stored in the database."""
    with errors_as_messages():
        for d in obj.engine().stored_definitions():
            if "chart" in d:  # a statechart: every node by path
                nodes = d["chart"]["nodes"]
                finals = [p for p, n in nodes.items() if n["kind"] == "final"]
                count, kind = len(nodes), "  (statechart)"
            else:
                finals = [n for n, s in d["states"].items() if s["final"]]
                count, kind = len(d["states"]), ""
            click.echo(
                f"{d['name']}@{d['version']}  initial={d['initial']}  "
                f"states={count}  final={','.join(finals)}{kind}"
            )


@cli.command()
@click.argument("machine")
@click.option("--context", "context_json", help="Initial context as JSON.")
@click.option("--id", "instance_id", help="Choose the instance id.")
@click.option("--resource", "resource_id", help="Owner / tenant id.")
@click.option("--key", "idempotency_key", help="Idempotency key.")
@click.pass_obj
def create(
    obj: CliContext,
    machine: str,
    context_json: str | None,
    instance_id: str | None,
    resource_id: str | None,
    idempotency_key: str | None,
) -> None:
    """Create an instance of MACHINE."""
    with errors_as_messages():
        engine = obj.engine()
        inst = engine.create(
            machine,
            context=parse_json(context_json, "--context"),
            id=instance_id,
            resource_id=resource_id,
            idempotency_key=idempotency_key,
        )
        show_instance(inst, engine.allowed_events(inst.id))


@cli.command()
@click.argument("instance_id")
@click.argument("event")
@click.option("--data", help="Event payload as JSON.")
@click.option("--resource", "resource_id", help="Only if the instance belongs to this resource.")
@click.pass_obj
def send(
    obj: CliContext, instance_id: str, event: str, data: str | None, resource_id: str | None
) -> None:
    """Send EVENT to an instance."""
    with errors_as_messages():
        engine = obj.engine()
        inst = engine.send(instance_id, event, parse_json(data, "--data"), resource_id=resource_id)
        show_instance(inst, engine.allowed_events(inst.id))


@cli.command()
@click.argument("instance_id")
@click.option("--resource", "resource_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(obj: CliContext, instance_id: str, resource_id: str | None, as_json: bool) -> None:
    """Show an instance: state, context and allowed events."""
    with errors_as_messages():
        engine = obj.engine()
        inst = engine.get(instance_id, resource_id=resource_id)
        allowed = None
        if inst.kind == "machine" and (inst.machine, inst.machine_version) in {
            (m.name, m.version) for m in engine.machines()
        }:
            allowed = engine.allowed_events(instance_id)
        if as_json:
            echo_json({**inst.model_dump(), "allowed_events": allowed})
        else:
            show_instance(inst, allowed)
            if allowed is None and inst.kind == "machine":
                click.echo("(pass --app to see allowed events)")


@cli.command()
@click.argument("instance_id")
@click.option("--resource", "resource_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history(obj: CliContext, instance_id: str, resource_id: str | None, as_json: bool) -> None:
    """Print every transition of an instance or run, numbered from 1."""
    with errors_as_messages():
        records = obj.engine().history(instance_id, resource_id=resource_id)
    if as_json:
        echo_json([r.model_dump() for r in records])
    else:
        show_history(records)


@cli.command("state-at")
@click.argument("instance_id")
@click.argument("seq", type=int)
@click.option("--resource", "resource_id", help="Only if the instance belongs to this resource.")
@click.pass_obj
def state_at(obj: CliContext, instance_id: str, seq: int, resource_id: str | None) -> None:
    """Time travel: the instance as it was after transition SEQ."""
    with errors_as_messages():
        engine = obj.engine()
        show_instance(engine.state_at(instance_id, seq, resource_id=resource_id), None)


@cli.command("list")
@click.option("--machine")
@click.option("--state")
@click.option("--status")
@click.option("--resource", "resource_id")
@click.option("--limit", default=50, show_default=True)
@click.option("--cursor")
@click.pass_obj
def list_instances(
    obj: CliContext,
    machine: str | None,
    state: str | None,
    status: str | None,
    resource_id: str | None,
    limit: int,
    cursor: str | None,
) -> None:
    """List instances, oldest first."""
    with errors_as_messages():
        page = obj.engine().list(
            machine=machine,
            state=state,
            status=status,
            resource_id=resource_id,
            limit=limit,
            cursor=cursor,
        )
    for inst in page.items:
        click.echo(
            f"{inst.id}  {inst.machine}@{inst.machine_version}  {inst.state:<16} "
            f"{inst.status:<9} v{inst.version}  {inst.updated_at:%Y-%m-%d %H:%M:%S}"
        )
    if page.next_cursor:
        click.echo(f"next page: --cursor {page.next_cursor}")


@cli.group()
def index() -> None:
    """Optional indexes: faster lists by state, at a price on every write (see docs)."""


@index.command("list")
@click.pass_obj
def index_list(obj: CliContext) -> None:
    """Show each optional index and whether it is built."""
    with errors_as_messages():
        built = obj.engine().store.optional_indexes()
    for name, present in built.items():
        click.echo(f"{name:<8} {'built' if present else 'not built'}")


@index.command("add")
@click.argument("name")
@click.pass_obj
def index_add(obj: CliContext, name: str) -> None:
    """Build an optional index (on PostgreSQL concurrently: writes go on meanwhile)."""
    with errors_as_messages():
        built = obj.engine().add_index(name)
    click.echo(f"built {', '.join(built)}" if built else f"index {name!r} is already built")


@index.command("drop")
@click.argument("name")
@click.pass_obj
def index_drop(obj: CliContext, name: str) -> None:
    """Drop an optional index."""
    with errors_as_messages():
        dropped = obj.engine().drop_index(name)
    click.echo(f"dropped {', '.join(dropped)}" if dropped else f"index {name!r} is not built")


@cli.group()
def timers() -> None:
    """Fire delayed transitions (after= / timeout=) of your machines."""


@timers.command("run")
@click.option("--once", is_flag=True, help="Fire what is due now, then exit.")
@click.option(
    "--poll", default=1.0, show_default=True, help="Longest sleep between checks, in seconds."
)
@click.pass_obj
def timers_run(obj: CliContext, once: bool, poll: float) -> None:
    """Fire due timers (needs --app); without --once, keep running until interrupted."""
    with errors_as_messages():
        engine = obj.engine()
        if not engine.machines():
            raise click.ClickException("no machines registered: pass --app yourapp")
        if once:
            click.echo(f"fired {engine.fire_due_timers()} timer(s)")
            return
        click.echo("firing timers; Ctrl-C to stop")
        try:
            engine.run_timers(poll_interval=poll)
        except KeyboardInterrupt:
            click.echo("stopped")


@timers.command("next")
@click.pass_obj
def timers_next(obj: CliContext) -> None:
    """When the next timer comes due (needs --app)."""
    with errors_as_messages():
        wake = obj.engine().next_wake_at()
    click.echo(wake.isoformat() if wake else "no timers pending")


@cli.group()
def effects() -> None:
    """Inspect and dispatch the effect outbox."""


@effects.command("list")
@click.option("--status", type=click.Choice(["pending", "done", "dead"]))
@click.option("--instance", "instance_id")
@click.option("--resource", "resource_id", help="Only if the instance belongs to this resource.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def effects_list(
    obj: CliContext,
    status: str | None,
    instance_id: str | None,
    resource_id: str | None,
    limit: int,
) -> None:
    """List outbox rows (with --resource: of one --instance of that resource)."""
    with errors_as_messages():
        rows = obj.engine().effects(
            status=status, instance_id=instance_id, limit=limit, resource_id=resource_id
        )
    for e in rows:
        err = f"  last error: {e.last_error}" if e.last_error else ""
        click.echo(
            f"{e.id:>6}  {e.instance_id}:{e.seq}:{e.position}  {e.name:<24} "
            f"{e.status:<8} attempts={e.attempts}{err}"
        )


@effects.command("dispatch")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def effects_dispatch(obj: CliContext, limit: int) -> None:
    """Run due effects now (needs --app for the effect code)."""
    with errors_as_messages():
        count = obj.engine().dispatch_effects(limit=limit)
    click.echo(f"dispatched {count} effect(s)")


def _load_plugins() -> None:
    for ep in sorted(entry_points(group="statewf.cli"), key=lambda e: e.name):
        if ep.name in cli.commands:
            continue
        try:
            command = ep.load()
        except Exception as exc:
            message = f"the {ep.name!r} command could not be loaded: {exc}"

            @cli.command(ep.name, help=f"(unavailable: {exc})")
            def _unavailable(message: str = message) -> None:
                raise click.ClickException(message)

            continue
        cli.add_command(command, ep.name)


def main() -> None:
    """Entry point of the ``statewf`` console script."""
    _load_plugins()
    cli(prog_name="statewf")


if __name__ == "__main__":  # pragma: no cover
    main()
