"""User code mounting the dashboard in an application; CI type-checks it with mypy --strict."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount

import durable
import statewf
from statewf import browse
from visualize.dashboard import User, create_app


def operators(conn: HTTPConnection) -> User | None:
    """Only requests that carry an operator header, scoped to one tenant."""
    name = conn.headers.get("x-operator")
    return User(name, resource_ids=frozenset({"acme"})) if name else None


async def session_user(conn: HTTPConnection) -> User | None:
    """An async auth callable is fine too."""
    return User("admin") if conn.cookies.get("session") else None


def build(engine: statewf.Engine, client: durable.Client) -> Starlette:
    """The shop's app with the dashboard under /ops."""
    ops = create_app(engine, client, auth=operators, read_only=False, poll_interval=2.0)
    other = create_app(engine, auth=session_user)
    tokened = create_app(engine, token="secret")
    page = browse.newest(engine, kind="workflow", status=["failed", "dead"], limit=20)
    counts: list[browse.StatusCount] = browse.status_counts(engine, resource_ids={"acme"})
    assert page.next_cursor is None or isinstance(page.next_cursor, str)
    assert all(c.count >= 0 for c in counts)
    return Starlette(
        routes=[Mount("/ops", app=ops), Mount("/admin", app=other), Mount("/t", app=tokened)]
    )
