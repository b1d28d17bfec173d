"""``statewf dashboard``: serve the dashboard for a database with uvicorn.

Loaded by the ``statewf`` command through the ``statewf.cli`` entry-point group.
Listens on 127.0.0.1 unless told otherwise, and refuses any other address unless
a token is set (``--token`` or ``STATEWF_DASHBOARD_TOKEN``).
"""

from __future__ import annotations

import click

from statewf.cli import CliContext, errors_as_messages
from visualize.dashboard.security import is_loopback

#: The environment variable that holds the dashboard's token.
TOKEN_ENV = "STATEWF_DASHBOARD_TOKEN"


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--token", envvar=TOKEN_ENV, help=f"Shared secret to sign in (or ${TOKEN_ENV}).")
@click.option("--read-only", is_flag=True, help="Show everything, allow no action.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between looks for changes.")
@click.pass_obj
def dashboard(
    obj: CliContext, host: str, port: int, token: str | None, read_only: bool, poll: float
) -> None:
    """Serve the web dashboard: instances, runs, human tasks, dead letters and workers."""
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"refusing to listen on {host} without authentication: pass --token SECRET "
            f"(or set {TOKEN_ENV}), or listen on 127.0.0.1"
        )
    try:
        import uvicorn

        from visualize.dashboard.app import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra ({exc.name} is missing): "
            'pip install "statewf[dashboard]"'
        ) from exc
    with errors_as_messages():
        engine = obj.engine()
        app = create_app(engine, token=token, read_only=read_only, poll_interval=poll)
    where = f"http://{host}:{port}/"
    click.echo(
        f"statewf dashboard on {where}" + (f" (sign in: {where}login?token=...)" if token else "")
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
