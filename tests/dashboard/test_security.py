"""Who gets in and what they may do: auth, token, loopback, CSRF, origin, read-only, tenants."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import csrf_of, path, post
from tests.dashboard.seed import World
from visualize.dashboard import User, create_app


def log_length(world: World, key: str) -> int:
    return len(world.engine.history(world.ids[key]))


def test_no_user_is_refused_every_page_and_action(world: World, as_user: Clients) -> None:
    anonymous = as_user(None)
    assert "sign in to the application first" in anonymous.get("/").text
    for url in ("/", "/instances", "/runs", "/tasks", path("runs", world.ids["waiting"])):
        assert anonymous.get(url).status_code == 401, url
    refused = anonymous.post(path("runs", world.ids["waiting"], "do", "cancel"), data={})
    assert refused.status_code == 401
    assert world.engine.get(world.ids["waiting"]).status == "waiting"


def test_an_action_without_the_users_csrf_token_changes_nothing(
    world: World, as_user: Clients
) -> None:
    alice = as_user("alice")
    before = log_length(world, "waiting")
    url = path("runs", world.ids["waiting"], "do", "cancel")
    assert alice.post(url, data={}).status_code == 403
    assert alice.post(url, data={"csrf": "0" * 64}).status_code == 403
    root_token = csrf_of(as_user("root"))  # another user's token is not alice's
    assert alice.post(url, data={"csrf": root_token}).status_code == 403
    foreign = alice.post(
        url, data={"csrf": csrf_of(alice)}, headers={"origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert "another site" in foreign.text
    assert log_length(world, "waiting") == before
    sent = alice.post(
        path("instances", world.ids["pending"], "send"), data={"event": "cancel", "csrf": "x"}
    )
    assert sent.status_code == 403
    assert world.engine.get(world.ids["pending"]).state == "pending"


def test_read_only_refuses_actions_and_shows_no_forms(world: World, as_user: Clients) -> None:
    viewer = as_user("root", read_only=True)
    page = viewer.get(path("runs", world.ids["waiting"])).text
    assert "/do/" not in page
    assert "read-only" in page
    before = log_length(world, "waiting")
    refused = post(viewer, path("runs", world.ids["waiting"], "do", "approve"))
    assert refused.status_code == 403
    assert "read-only" in refused.text
    assert log_length(world, "waiting") == before
    inst = viewer.get(path("instances", world.ids["pending"])).text
    assert "/send" not in inst


def test_wrong_tenant_actions_are_refused_and_change_nothing(
    world: World, as_user: Clients
) -> None:
    gina = as_user("gina")
    for key, action in (("waiting", "approve"), ("waiting", "cancel"), ("failed", "retry")):
        before = log_length(world, key)
        refused = post(gina, path("runs", world.ids[key], "do", action), {"reason": "mine"})
        assert refused.status_code == 404, action
        assert log_length(world, key) == before
    refused = post(gina, path("instances", world.ids["pending"], "send"), {"event": "cancel"})
    assert refused.status_code == 404
    assert world.engine.get(world.ids["pending"]).state == "pending"


def test_token_mode_needs_the_token_and_login_sets_a_cookie(world: World) -> None:
    app = create_app(world.engine, token="s3cret")
    with TestClient(app, client=("203.0.113.9", 5000), follow_redirects=False) as web:
        assert "/login?token=YOUR_TOKEN" in web.get("/").text
        assert web.get("/", headers={"authorization": "Bearer nope"}).status_code == 401
        assert web.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert web.get("/login", params={"token": "nope"}).status_code == 401
        login = web.get("/login", params={"token": "s3cret"})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert web.get("/runs").status_code == 200  # the cookie now


def test_without_auth_only_loopback_clients_get_in(world: World) -> None:
    app = create_app(world.engine)
    with TestClient(app, client=("203.0.113.9", 5000)) as remote:
        refused = remote.get("/")
        assert refused.status_code == 401
        assert "start it with --token SECRET" in refused.text
    with TestClient(app, client=("::1", 5000)) as local:
        page = local.get("/")
        assert page.status_code == 200
        assert ">local<" in page.text


def test_auth_and_token_together_are_refused(world: World) -> None:
    with pytest.raises(Exception, match="not both"):
        create_app(world.engine, auth=lambda _c: User("x"), token="t")


async def _async_auth(conn: object) -> User | None:
    return User("async-user", frozenset({"globex"}))


def test_an_async_auth_callable_scopes_the_user(world: World) -> None:
    app = create_app(world.engine, auth=_async_auth)
    with TestClient(app) as web:
        page = web.get("/instances").text
        assert world.ids["globex"] in page
        assert world.ids["pending"] not in page


def test_the_cli_refuses_a_public_address_without_a_token(sqlite_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STATEWF_DASHBOARD_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "statewf.cli", "-d", sqlite_url, "dashboard", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "--token" in result.stderr
