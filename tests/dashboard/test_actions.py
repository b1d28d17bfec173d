"""Every action through the dashboard on both stores: what it records, and who it records."""

from __future__ import annotations

import re

from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import csrf_of, path, post
from tests.dashboard.seed import World

JSON = {"accept": "application/json"}


def rows(world: World, key: str, kind: str) -> list[dict[str, object]]:
    return [
        {"event": r.event, "payload": r.payload, "meta": r.meta}
        for r in world.engine.history(world.ids[key])
        if r.kind == kind
    ]


def test_send_an_event_from_its_schema_form(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    url = path("instances", world.ids["pending"], "send")
    bad = post(alice, url, {"event": "pay", "f_amount": "lots"})
    assert bad.status_code == 400
    assert "takes a whole number" in bad.text
    missing = post(alice, url, {"event": "pay"}, headers=JSON)
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("InvalidPayload")
    unknown = post(alice, url, {"event": "deliver"}, headers=JSON)
    assert unknown.status_code == 400
    assert world.engine.get(world.ids["pending"]).state == "pending"  # nothing changed
    sent = post(alice, url, {"event": "pay", "f_amount": "30", "f_currency": "USD"})
    assert sent.status_code == 303
    assert sent.headers["location"] == path("instances", world.ids["pending"])
    after = world.engine.get(world.ids["pending"])
    assert after.state == "paid"
    assert world.engine.history(after.id)[-1].payload == {"amount": 30, "currency": "USD"}
    answered = post(
        alice, path("instances", world.ids["pending"], "send"), {"event": "ship"}, headers=JSON
    )
    assert answered.json() == {"ok": True, "state": "shipped", "status": "active"}


def test_approve_and_reject_record_the_acting_user(world: World, as_user: Clients) -> None:
    alice, gina = as_user("alice"), as_user("gina")
    approved = post(alice, path("runs", world.ids["waiting"], "do", "approve"), {"reason": "ok"})
    assert approved.status_code == 303
    (event,) = rows(world, "waiting", "event")
    assert event["event"] == "approval:manager"
    assert event["payload"] == {
        "approved": True,
        "reviewer": "alice",
        "reason": "ok",
        "answer": None,
    }
    url = path("runs", world.ids["globex_waiting"], "do", "reject")
    no_reason = post(gina, url, headers=JSON)
    assert no_reason.status_code == 400
    assert "needs a reason" in no_reason.json()["error"]
    assert post(gina, url, {"reason": "too much"}).status_code == 303
    (event,) = rows(world, "globex_waiting", "event")
    assert event["payload"] == {
        "approved": False,
        "reviewer": "gina",
        "reason": "too much",
        "answer": None,
    }


def test_cancel_pause_resume_fast_forward_trigger(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    run = world.ids["waiting"]
    assert post(alice, path("runs", run, "do", "pause")).status_code == 303
    assert world.engine.get(run).status == "paused"
    assert post(alice, path("runs", run, "do", "resume")).status_code == 303
    assert world.engine.get(run).status != "paused"
    assert rows(world, "waiting", "pause")[-1]["meta"] == {"by": "alice"}
    assert rows(world, "waiting", "resume")[-1]["meta"]["by"] == "alice"
    triggered = post(
        alice, path("runs", run, "do", "trigger"), {"event": "note", "payload_json": '{"a": 1}'}
    )
    assert triggered.status_code == 303
    assert rows(world, "waiting", "event")[-1] == {
        "event": "note",
        "payload": {"a": 1},
        "meta": {"by": "alice"},
    }
    bad_json = post(
        alice,
        path("runs", run, "do", "trigger"),
        {"event": "note", "payload_json": "{"},
        headers=JSON,
    )
    assert bad_json.status_code == 400
    assert "not valid JSON" in bad_json.json()["error"]
    assert post(alice, path("runs", run, "do", "fast-forward"), headers=JSON).json()["ok"]
    cancelled = post(alice, path("runs", run, "do", "cancel"), {"reason": "dup"}, headers=JSON)
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["moved"] is None
    (cancel,) = rows(world, "waiting", "cancel")
    assert cancel["meta"] == {"reason": "by alice: dup"}
    again = post(alice, path("runs", run, "do", "cancel"), headers=JSON)
    assert again.status_code == 409  # finished: RunFinished
    unknown = post(alice, path("runs", run, "do", "explode"), headers=JSON)
    assert unknown.status_code == 400


def test_dead_letters_retry_discard_and_fork(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    failed = world.ids["failed"]
    no_reason = post(alice, path("runs", failed, "do", "discard"), headers=JSON)
    assert no_reason.json()["ok"] is True  # the acting user is reason enough
    assert world.engine.get(failed).status == "cancelled"
    (discard,) = rows(world, "failed", "discard")
    assert "by alice" in str(discard["meta"])
    forked = post(
        alice, path("runs", world.ids["completed"], "do", "fork"), {"from_step": "part-1"}
    )
    assert forked.status_code == 303
    new_id = forked.headers["location"].rsplit("/", 1)[1]
    assert new_id != world.ids["completed"]
    copy = world.engine.get(new_id)
    assert copy.machine == "report"
    assert copy.resource_id == "acme"
    as_json = post(
        alice,
        path("runs", world.ids["completed"], "do", "fork"),
        {"from_step": "part-0"},
        headers=JSON,
    ).json()
    assert as_json["moved"] == path("runs", as_json["run"])  # the page goes to the new run
    assert as_json["run"] not in (new_id, world.ids["completed"])
    missing = post(alice, path("runs", world.ids["completed"], "do", "fork"), headers=JSON)
    assert "choose the step" in missing.json()["error"]


def test_retry_records_the_user(world: World, as_user: Clients) -> None:
    root = as_user("root")
    retried = post(
        root, path("runs", world.ids["failed"], "do", "retry"), {"reason": "fixed"}, headers=JSON
    )
    assert retried.json()["ok"] is True
    (retry,) = rows(world, "failed", "retry_run")
    assert "by root: fixed" in str(retry["meta"])


def test_the_live_stream_says_change_when_the_watched_run_changed(
    world: World, as_user: Clients
) -> None:
    alice = as_user("alice")
    page = alice.get(path("runs", world.ids["waiting"])).text
    token = re.search(r'data-token="([0-9a-f]+)"', page)
    assert token
    post(alice, path("runs", world.ids["waiting"], "do", "pause"))
    params = {"watch": f"run:{world.ids['waiting']}", "since": token.group(1)}
    with alice.stream("GET", "/live", params=params) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data:"):
                break
    assert "event: change" in lines
    fresh = alice.get(path("runs", world.ids["waiting"]), headers={"x-live": "1"}).text
    assert fresh.lstrip().startswith('<section class="top">')  # only the live region
    assert "<html" not in fresh
    assert "paused" in fresh
    assert alice.get("/live", params={"watch": "nonsense"}).status_code == 400


def test_csrf_token_is_per_user(world: World, as_user: Clients) -> None:
    assert csrf_of(as_user("alice")) != csrf_of(as_user("gina"))


def test_every_action_form_carries_the_token(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    token = csrf_of(alice)
    for url in (path("runs", world.ids["waiting"]), path("instances", world.ids["pending"])):
        page = alice.get(url).text
        forms = page.count('method="post"')
        assert forms > 0
        assert page.count(f'name="csrf" value="{token}"') == forms, url


def test_answer_a_wait_from_its_schema_form(world: World, as_user: Clients) -> None:
    alice = as_user("alice")
    inbox = alice.get("/tasks", params={"kind": "event"}).text
    assert world.ids["event_waiting"] in inbox
    assert "Waiting for <code>arrived</code>" in inbox
    assert 'name="f_carrier"' in inbox
    assert 'name="f_boxes"' in inbox
    assert world.ids["waiting"] not in inbox  # approvals are on the other tab
    url = path("runs", world.ids["event_waiting"], "do", "trigger")
    bad = post(alice, url, {"event": "arrived", "f_carrier": "dhl", "f_boxes": "two"}, headers=JSON)
    assert bad.status_code == 400
    assert "takes a whole number" in bad.json()["error"]
    missing = post(alice, url, {"event": "arrived", "f_boxes": "2"}, headers=JSON)
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("InvalidPayload")  # carrier is required
    assert rows(world, "event_waiting", "event") == []
    sent = post(alice, url, {"event": "arrived", "f_carrier": "dhl", "f_boxes": "2"}, headers=JSON)
    assert sent.json()["ok"] is True
    (event,) = rows(world, "event_waiting", "event")
    assert event == {
        "event": "arrived",
        "payload": {"carrier": "dhl", "boxes": 2},
        "meta": {"by": "alice"},
    }
