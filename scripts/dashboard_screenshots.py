"""Regenerate the screenshots in docs/dashboard.md: python scripts/dashboard_screenshots.py

Seeds a fresh SQLite database with the dashboard tests' world, serves the dashboard
on a free local port, and photographs its main pages with Debian's headless
chromium through Playwright. Writes docs/images/dashboard-*.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

import statewf  # noqa: E402
from tests.dashboard.conftest import header_auth  # noqa: E402
from tests.dashboard.helpers import path  # noqa: E402
from tests.dashboard.seed import Executor, seed  # noqa: E402
from tests.dashboard.test_browser import ARGS, CHROMIUM, Served  # noqa: E402
from visualize.dashboard import create_app  # noqa: E402

OUT = ROOT / "docs" / "images"


def main() -> None:
    """Seed, serve, photograph."""
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = statewf.Engine(f"sqlite:///{tmp}/shots.db")
        world = seed(engine)
        for n in range(12):
            engine.create("order", id=f"order-acme-{n + 10}", resource_id="acme")
        app = create_app(engine, auth=header_auth, poll_interval=0.3)
        with Executor(engine), Served(world, app) as served, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            context = browser.new_context(
                extra_http_headers={"x-test-user": "root"},
                viewport={"width": 1200, "height": 760},
            )
            page = context.new_page()
            shots = {
                "overview": "/",
                "runs": "/runs",
                "run": path("runs", world.ids["waiting"]),
                "instance": path("instances", world.ids["shipped"]) + "?seq=2",
                "tasks": "/tasks",
                "dead-letters": "/dead-letters",
            }
            for name, url in shots.items():
                page.goto(served.url + url)
                if page.locator(".diagram").count():
                    expect(page.locator(".diagram svg").first).to_be_visible()
                if name in ("run", "instance"):
                    page.locator(".diagram").first.scroll_into_view_if_needed()
                    page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(OUT / f"dashboard-{name}.png"))
                print(f"wrote docs/images/dashboard-{name}.png")
            browser.close()
        engine.close()


if __name__ == "__main__":
    main()
