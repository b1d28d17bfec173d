"""The dashboard in a real headless Chromium (Debian's), driven by Playwright for Python.

A user opens the overview, filters runs, approves a run through its form and sees
it complete without a reload, sends an event to an instance through its form, and
a user of another tenant sees nothing of it. Runs are executed meanwhile by a
WorkflowEngine in another thread, as a worker process would.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        raise RuntimeError(
            "CI needs Debian's chromium: apt-get install -y chromium chromium-driver"
        )
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True
    )
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
expect = playwright.expect
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is in the dashboard extra")

import statewf  # noqa: E402
from tests.dashboard.conftest import header_auth  # noqa: E402
from tests.dashboard.helpers import path  # noqa: E402
from tests.dashboard.seed import Executor, World, seed  # noqa: E402
from visualize.dashboard import create_app  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """The dashboard served by uvicorn in a thread, and the seed it shows."""

    def __init__(self, world: World, app: Any) -> None:
        self.world = world
        self.url = f"http://127.0.0.1:{_free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            threading.Event().wait(0.02)
        raise AssertionError("the dashboard did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(db: dict[str, str | None]) -> Iterator[Served]:
    engine = statewf.Engine(db["url"], schema=db["schema"])
    try:
        world = seed(engine)
        app = create_app(engine, auth=header_auth, poll_interval=0.2)
        with Executor(engine), Served(world, app) as running:
            yield running
    finally:
        engine.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def page_as(browser: Any, served: Served, user: str) -> Any:
    context = browser.new_context(extra_http_headers={"x-test-user": user})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    return page


def test_overview_filter_approve_live_and_send_an_event(served: Served, browser: Any) -> None:
    ids = served.world.ids
    page = page_as(browser, served, "alice")
    page.goto(served.url + "/")
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator("#count-waiting").inner_text() == "1"  # only acme's approval

    page.click("text=Runs")
    page.select_option("#filters select[name=status]", "waiting")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/runs?*status=waiting*")
    rows = page.locator("#rows tbody").inner_text()
    assert ids["waiting"] in rows
    assert ids["completed"] not in rows

    page.click(f"a:text('{ids['waiting']}')")
    page.wait_for_selector("#approve")
    assert "waiting" in page.locator("#run-status").inner_text()
    page.evaluate("window.__notReloaded = true")
    page.fill("#approval-reason", "looks right")
    page.click("#approve")
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=WAIT_MS)
    assert page.evaluate("window.__notReloaded") is True  # updated in place, no reload
    assert '"by": "alice"' in page.locator("#output").inner_text()
    page.wait_for_selector(".diagram svg")  # the run's diagram, inline

    page.goto(served.url + path("instances", ids["pending"]))
    page.evaluate("window.__notReloaded = true")
    page.fill("input[name=f_amount]", "12")
    page.click("button[data-event=pay]")
    expect(page.locator("#state")).to_have_text("paid", timeout=WAIT_MS)
    assert page.evaluate("window.__notReloaded") is True
    assert "Send ship" in page.content()
    last = served.world.engine.history(ids["pending"])[-1]
    assert (last.event, last.payload) == ("pay", {"amount": 12, "currency": "EUR"})
    assert page.errors == []


def test_a_wrong_tenant_sees_nothing_of_another(served: Served, browser: Any) -> None:
    ids = served.world.ids
    page = page_as(browser, served, "gina")
    for url in ("/", "/runs", "/instances", "/tasks", "/dead-letters"):
        page.goto(served.url + url)
        text = page.content()
        for key in ("pending", "shipped", "waiting", "failed", "completed"):
            assert ids[key] not in text, f"acme's {key} on {url}"
    page.goto(served.url + "/tasks")
    assert ids["globex_waiting"] in page.content()
    answer = page.goto(served.url + path("runs", ids["waiting"]))
    assert answer.status == 404
    assert "that you may see" in page.content()
    assert page.errors == []
