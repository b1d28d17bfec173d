"""Fixtures of the dashboard tests: a seeded database on both stores and clients as users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")

from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

import statewf
from tests.dashboard.seed import World, seed
from visualize.dashboard import User, create_app

#: The users of the tests, by the name sent in the ``x-test-user`` header.
USERS = {
    "alice": User("alice", frozenset({"acme"})),
    "gina": User("gina", frozenset({"globex"})),
    "root": User("root"),
}


def header_auth(conn: HTTPConnection) -> User | None:
    """The tests' ``auth``: the user named by a header (a real app would check a session)."""
    return USERS.get(conn.headers.get("x-test-user", ""))


@pytest.fixture
def world(db: dict[str, str | None]) -> Iterator[World]:
    """The seed on the test's database (SQLite file or PostgreSQL schema)."""
    engine = statewf.Engine(db["url"], schema=db["schema"])
    try:
        yield seed(engine)
    finally:
        engine.close()


Clients = Callable[..., TestClient]


@pytest.fixture
def as_user(world: World) -> Iterator[Clients]:
    """``as_user("alice", read_only=False)``: a TestClient of a dashboard, signed in."""
    made: list[TestClient] = []

    def make(name: str | None, **options: Any) -> TestClient:
        app = create_app(world.engine, auth=header_auth, **options)
        client = TestClient(app, client=("127.0.0.1", 40000), follow_redirects=False)
        if name is not None:
            client.headers["x-test-user"] = name
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)
