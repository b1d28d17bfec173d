"""The task inbox: a human task's prompt, context, assignee and answer form, on both stores."""

from __future__ import annotations

import html

from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import path, post
from tests.dashboard.seed import HOSTILE, World

JSON = {"accept": "application/json"}


def test_the_tasks_tab_shows_what_the_person_is_asked(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    page = alice.get("/tasks", params={"kind": "task"}).text
    assert world.ids["task_waiting"] in page
    assert "Task <code>copy-check</code>" in page
    assert "Is this product text fit to publish?" in page           # the prompt
    assert HOSTILE not in page                                       # shown as text
    assert html.escape(HOSTILE, quote=False)[:20] in page
    assert "Fresh apples" in page                                    # the task's context
    assert "assignee <a" in page
    assert 'name="f_verdict"' in page                                # the answer schema's form
    assert 'name="f_score"' in page
    assert "/do/complete" in page
    assert world.ids["waiting"] not in page                          # approvals: other tab
    assert world.ids["event_waiting"] not in page                    # plain events: other tab
    events = alice.get("/tasks", params={"kind": "event"}).text
    assert world.ids["task_waiting"] not in events


def test_the_inbox_filters_by_assignee(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    mine = alice.get("/tasks", params={"kind": "task", "assignee": "alice"}).text
    assert world.ids["task_waiting"] in mine
    theirs = alice.get("/tasks", params={"kind": "task", "assignee": "bob"}).text
    assert world.ids["task_waiting"] not in theirs
    bogus = alice.get("/tasks", params={"kind": "bogus"}, headers=JSON)
    assert bogus.status_code == 400
    assert "unknown task kind 'bogus'" in bogus.json()["error"]


def test_completing_a_task_checks_the_answer_and_records_the_reviewer(
    world: World, as_user: Clients
) -> None:
    alice = as_user("alice")
    run = world.ids["task_waiting"]
    url = path("runs", run, "do", "complete")
    answer = {"step": "copy-check", "f_verdict": "ok", "f_score": "ten"}
    bad = post(alice, url, answer, headers=JSON)
    assert bad.status_code == 400
    assert "takes a whole number" in bad.json()["error"]
    missing = post(alice, url, {"step": "copy-check", "f_score": "3"}, headers=JSON)
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("InvalidPayload")      # verdict is required
    assert [r for r in world.engine.history(run) if r.kind == "event"] == []  # nothing recorded
    done = post(
        alice,
        url,
        {"step": "copy-check", "f_verdict": "publish", "f_score": "4", "reason": "reads well"},
        headers=JSON,
    )
    assert done.status_code == 200
    assert done.json()["ok"] is True
    (event,) = [r for r in world.engine.history(run) if r.kind == "event"]
    assert event.event == "task:copy-check"
    assert event.payload == {
        "data": {"verdict": "publish", "score": 4},
        "reviewer": "alice",
        "comment": "reads well",
    }


def test_the_run_page_offers_the_task_form(world: World, as_user: Clients) -> None:
    page = as_user("alice").get(path("runs", world.ids["task_waiting"])).text
    assert 'id="task-form"' in page
    assert "Is this product text fit to publish?" in page
    assert 'name="f_verdict"' in page
    assert "Fresh apples" in page
