"""The statewf dashboard: a web page for instances, runs, human tasks, dead letters, workers.

Serve it with ``statewf dashboard --database URL --app myapp`` or mount it in an
ASGI application::

    app.mount("/ops", create_app(engine, client, auth=my_auth))

Pages are rendered on the server (Jinja2, autoescaped), with one small script and
one stylesheet shipped in the package. Every read and action is scoped to the
resources of the :class:`User` the ``auth`` callable returns; every action is a
POST with a CSRF token. Needs the ``dashboard`` extra: ``pip install "statewf[dashboard]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visualize.dashboard.app import create_app
    from visualize.dashboard.security import User

__all__ = ["User", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `statewf dashboard` can say which extra is missing.
    if name == "create_app":
        from visualize.dashboard.app import create_app

        return create_app
    if name == "User":
        from visualize.dashboard.security import User

        return User
    raise AttributeError(f"module 'visualize.dashboard' has no attribute {name!r}")
