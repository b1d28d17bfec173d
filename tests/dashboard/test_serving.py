"""The dashboard served for real: mounted under a path of another app; `statewf dashboard`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from tests.dashboard.conftest import header_auth
from tests.dashboard.helpers import csrf_of
from tests.dashboard.seed import World
from visualize.dashboard import create_app


def test_mounted_under_a_path_every_link_and_redirect_keeps_it(world: World) -> None:
    host = Starlette(
        routes=[
            Route("/", lambda _r: PlainTextResponse("the shop")),
            Mount("/ops", app=create_app(world.engine, auth=header_auth)),
        ]
    )
    with TestClient(host, headers={"x-test-user": "alice"}, follow_redirects=False) as web:
        assert web.get("/").text == "the shop"
        page = web.get("/ops/instances").text
        assert 'href="/ops/instances/order-acme-1"' in page
        assert 'href="/ops/static/dashboard.css"' in page
        assert web.get("/ops/static/dashboard.js").status_code == 200
        token = csrf_of(web, "/ops/")
        sent = web.post("/ops/instances/order-acme-1/send", data={"event": "cancel", "csrf": token})
        assert sent.status_code == 303
        assert sent.headers["location"] == "/ops/instances/order-acme-1"
    assert world.engine.get("order-acme-1").state == "cancelled"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_statewf_dashboard_serves_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    port = _port()
    env = {**os.environ, "STATEWF_DASHBOARD_TOKEN": "let-me-in"}
    server = subprocess.Popen(
        [sys.executable, "-m", "statewf.cli", "-d", url, "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status = _get(base + "/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.1)
        assert status == 401  # the token from the environment is required
        assert _get(base + "/", token="let-me-in") == 200
        assert _get(base + "/runs", token="wrong") == 401
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_the_public_names_are_pinned() -> None:
    import visualize.dashboard

    assert visualize.dashboard.__all__ == ["User", "create_app"]
