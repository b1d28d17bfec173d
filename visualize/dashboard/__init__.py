"""The statewf dashboard: a web page for instances, runs, human tasks, dead letters, workers.

Serve it with ``statewf dashboard --database URL --app myapp`` or mount it in an
ASGI application::

    app.mount("/ops", create_app(engine, client, auth=my_auth))

Pages are rendered on the server (Jinja2, autoescaped), with one small script and
one stylesheet shipped in the package. Every read and action is scoped to the
resources of the :class:`User` the ``auth`` callable returns; every action is a
POST with a CSRF token. Needs the ``dashboard`` extra: ``pip install "statewf[dashboard]"``.
"""

from visualize.dashboard.app import create_app
from visualize.dashboard.security import User

__all__ = ["User", "create_app"]
