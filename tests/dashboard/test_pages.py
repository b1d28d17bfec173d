"""Every page of the dashboard on both stores: what it shows, what it hides, hostile names inert."""

from __future__ import annotations

import re

import pytest

from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import path
from tests.dashboard.seed import HOSTILE, World

RAW_MARKUP = ("<script>alert", "<img src=x", "<b>evil</b>", "<i>start</i>", "<u>go</u>")


def assert_inert(html: str) -> None:
    """No stored hostile markup came through as markup."""
    for raw in RAW_MARKUP:
        assert raw not in html, f"unescaped {raw!r} in the page"


def test_overview_counts_waiting_failures_for_everyone(world: World, as_user: Clients) -> None:
    page = as_user("root").get("/")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'id="count-waiting">2<', html)  # both tenants' approvals
    assert world.ids["failed"] in html
    assert world.ids["waiting"] in html
    assert "order" in html
    assert "refund" in html
    assert_inert(html)
    assert "&lt;script&gt;" in html  # the hostile workflow name, as text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_lists_filter_and_page_newest_first(world: World, as_user: Clients) -> None:
    root = as_user("root")
    everything = root.get("/instances").text
    order = [world.ids[k] for k in ("globex", "shipped", "pending") if world.ids[k] in everything]
    assert order == [world.ids["globex"], world.ids["shipped"], world.ids["pending"]]
    assert everything.index(world.ids["globex"]) < everything.index(world.ids["pending"])
    shipped = root.get("/instances", params={"state": "shipped"}).text
    assert world.ids["shipped"] in shipped
    assert world.ids["pending"] not in shipped
    waiting = root.get("/runs", params={"status": "waiting"}).text
    assert world.ids["waiting"] in waiting
    assert world.ids["completed"] not in waiting
    by_queue = root.get("/runs", params={"queue": "nowhere"}).text
    assert world.ids["waiting"] not in by_queue
    assert "no run matches" in by_queue
    later = root.get("/runs", params={"after": "2999-01-01T00:00"}).text
    assert "no run matches" in later
    bad = root.get("/runs", params={"after": "yesterday"})
    assert bad.status_code == 400
    assert "is not a date" in bad.text
    # keyset pagination: page 1 has the newest, its "Older" cursor gives the rest
    for n in range(60):
        world.engine.create("order", id=f"bulk-{n:03d}", resource_id="acme")
    first = root.get("/instances", params={"machine": "order"}).text
    cursor = re.search(r'name="cursor" value="([^"]+)"', first)
    assert cursor
    assert "bulk-059" in first
    assert world.ids["pending"] not in first
    second = root.get("/instances", params={"machine": "order", "cursor": cursor.group(1)}).text
    assert world.ids["pending"] in second
    assert "bulk-059" not in second


def test_instance_page_state_context_events_history_and_time_travel(
    world: World, as_user: Clients
) -> None:
    root = as_user("root")
    html = root.get(path("instances", world.ids["shipped"])).text
    assert 'id="state">shipped<' in html
    assert 'value="deliver"' in html
    assert 'value="pay"' not in html
    history = html.split('id="history"')[1]
    assert history.count("<tr") == 4  # the header, then create, pay, ship
    past = root.get(path("instances", world.ids["shipped"]), params={"seq": "2"}).text
    assert 'id="state-at">paid<' in past
    form = root.get(path("instances", world.ids["pending"])).text
    assert 'name="f_amount"' in form
    assert 'type="number"' in form
    assert 'name="f_currency"' in form
    bad = root.get(path("instances", world.ids["shipped"]), params={"seq": "99"})
    assert bad.status_code == 400
    assert "seq must be between 1 and 3" in bad.text
    svg = root.get(path("instances", world.ids["shipped"], "diagram")).text
    assert svg.startswith("<svg")
    assert "shipped" in svg
    run_as_instance = root.get(path("instances", world.ids["waiting"]))
    assert run_as_instance.status_code == 303
    assert run_as_instance.headers["location"].endswith(f"/runs/{world.ids['waiting']}")


def test_run_pages_timeline_waits_actions_and_diagram(world: World, as_user: Clients) -> None:
    root = as_user("root")
    waiting = root.get(path("runs", world.ids["waiting"])).text
    assert "Approval <code>manager</code>" in waiting
    assert 'id="approve"' in waiting
    assert "<code>check</code>" in waiting  # the finished step in the timeline
    assert "/do/cancel" in waiting
    assert "/do/retry" not in waiting
    failed = root.get(path("runs", world.ids["failed"])).text
    assert "ValueError" in failed
    assert "/do/retry" in failed
    assert "/do/discard" in failed
    assert_inert(failed)
    done = root.get(path("runs", world.ids["completed"])).text
    assert "part-2" in done
    assert "/do/cancel" not in done
    svg = root.get(path("runs", world.ids["completed"], "diagram")).text
    assert svg.startswith("<svg")
    assert "3 of about 3 steps done" in svg
    log = root.get(path("runs", world.ids["completed"], "log")).text
    assert log.count("<tr>") >= 5  # the header, create, the steps, completed
    assert "part-1" in log
    assert "<html" not in log  # a fragment, loaded by the page after itself
    hostile_svg = root.get(path("runs", world.ids["failed"], "diagram")).text
    assert hostile_svg.startswith("<svg")
    assert "&lt;script&gt;" in hostile_svg
    assert_inert(hostile_svg)


def test_inboxes_tasks_dead_letters_workers(world: World, as_user: Clients) -> None:
    root = as_user("root")
    tasks = root.get("/tasks").text
    assert world.ids["waiting"] in tasks
    assert world.ids["globex_waiting"] in tasks
    assert "Approval <code>manager</code>" in tasks
    dead = root.get("/dead-letters").text
    assert world.ids["failed"] in dead
    assert "ValueError" in dead
    assert world.ids["waiting"] not in dead
    assert_inert(dead)
    assert "Only dead" not in root.get("/dead-letters", params={"only": "dead"}).text
    workers = root.get("/workers")
    assert workers.status_code == 200
    assert "no worker heart-beat" in workers.text


def test_a_tenant_sees_nothing_of_another_tenant(world: World, as_user: Clients) -> None:
    gina = as_user("gina")
    for page in ("/", "/instances", "/runs", "/tasks", "/dead-letters"):
        html = gina.get(page).text
        for key in ("pending", "shipped", "waiting", "failed", "completed", "evil"):
            assert world.ids[key] not in html, f"{key} of acme shown to globex on {page}"
    assert world.ids["globex"] in gina.get("/instances").text
    assert world.ids["globex_waiting"] in gina.get("/tasks").text
    for url in (
        path("instances", world.ids["pending"]),
        path("instances", world.ids["pending"], "diagram"),
        path("runs", world.ids["waiting"]),
        path("runs", world.ids["waiting"], "diagram"),
        path("runs", world.ids["waiting"], "log"),
    ):
        refused = gina.get(url)
        assert refused.status_code == 404, url
        assert "that you may see" in refused.text
    watched = gina.get("/live", params={"watch": f"run:{world.ids['waiting']}"})
    assert watched.status_code == 404
    # asking for another tenant's resource by filter gives nothing, not their rows
    other = gina.get("/instances", params={"resource": "acme"}).text
    assert world.ids["pending"] not in other
    assert "no instance matches" in other


@pytest.mark.parametrize("page", ["/", "/instances", "/runs", "/tasks", "/dead-letters"])
def test_hostile_names_are_text_on_every_list(world: World, as_user: Clients, page: str) -> None:
    html = as_user("root").get(page).text
    assert_inert(html)


def test_hostile_instance_page_is_inert(world: World, as_user: Clients) -> None:
    root = as_user("root")
    html = root.get(path("instances", world.ids["evil"])).text
    assert_inert(html)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    svg = root.get(path("instances", world.ids["evil"], "diagram")).text
    assert svg.startswith("<svg")
    assert_inert(svg)
    assert HOSTILE not in html
