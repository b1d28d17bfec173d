"""The operator's inboxes: human tasks waiting for an answer, dead letters, live workers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from durable.log.views import task_of
from statewf import browse
from statewf.errors import InvalidInput
from statewf.records import Instance
from visualize.dashboard.forms import fields_of
from visualize.dashboard.live import token as live_token
from visualize.dashboard.pages import PAGE_SIZE, RUN_KIND, live_workers_of, query_text
from visualize.dashboard.schemas import wait_form_schema
from visualize.dashboard.security import User

if TYPE_CHECKING:
    from visualize.dashboard.app import Dashboard, Handler


#: The tabs of the task inbox: what each lists, by the prefix of the event a run waits for.
TASK_TABS = {"approval": "approval:", "task": "task:", "event": ""}


def _task_item(snap: Instance) -> dict[str, Any] | None:
    """What the inbox shows of one waiting run, or None when it waits for no person."""
    waiting = snap.context.get("waiting") or {}
    event = str(waiting.get("event") or "")
    if not event:
        return None
    task = task_of(snap)
    prefix, _, step = event.partition(":")
    kind = prefix if prefix in ("approval", "task") else "event"
    return {
        "snap": snap,
        "kind": kind,
        "waiting": waiting,
        "step": step if kind != "event" else "",
        "event": event,
        "approval": kind == "approval",
        "task": task,
        # an approval's or task's answer form follows the answer schema stored with the
        # wait; an event's follows its payload schema, when this process has the model
        "fields": fields_of(wait_form_schema(waiting)),
        "input": snap.context.get("input"),
        "assignee": (task.assignee if task is not None else None) or snap.context.get("assignee"),
    }


def tasks(dash: Dashboard) -> Handler:
    """Runs waiting for a person: approvals, human tasks and events, each with its answer form."""

    async def page(request: Request, user: User) -> Response:
        kind = query_text(request, "kind") or "approval"
        if kind not in TASK_TABS:
            raise InvalidInput(f"unknown task kind {kind!r}; use one of {', '.join(TASK_TABS)}")
        assignee = query_text(request, "assignee")
        found = await asyncio.to_thread(
            browse.newest,
            dash.engine,
            kind=RUN_KIND,
            status="waiting",
            machine=query_text(request, "workflow"),
            waiting_for=TASK_TABS[kind],
            resource_ids=user.scope(query_text(request, "resource")),
            cursor=query_text(request, "cursor"),
            limit=PAGE_SIZE,
        )
        items = [
            item
            for item in map(_task_item, found.items)
            if item is not None
            and item["kind"] == kind
            and (assignee is None or item["assignee"] == assignee)
        ]
        return dash.html(
            request,
            user,
            "tasks.html",
            items=items,
            page=found,
            kind=kind,
            assignee=assignee,
            filters=dict(request.query_params),
            token=await asyncio.to_thread(live_token, dash, user, "list:runs"),
        )

    return page


def dead_letters(dash: Dashboard) -> Handler:
    """Dead (and failed) runs, newest first, with their error; retry or discard each."""

    async def page(request: Request, user: User) -> Response:
        statuses = ["dead"] if request.query_params.get("only") == "dead" else ["dead", "failed"]
        found = await asyncio.to_thread(
            browse.newest,
            dash.engine,
            kind=RUN_KIND,
            status=statuses,
            machine=query_text(request, "workflow"),
            resource_ids=user.scope(query_text(request, "resource")),
            cursor=query_text(request, "cursor"),
            limit=PAGE_SIZE,
        )
        return dash.html(
            request, user, "dead_letters.html", page=found, filters=dict(request.query_params)
        )

    return page


def workers(dash: Dashboard) -> Handler:
    """Workers that heart-beat lately (queues, labels, workflows served, held leases, last
    heartbeat) and the unfinished runs of versions none of them serves."""

    async def page(request: Request, user: User) -> Response:
        rows = await asyncio.to_thread(live_workers_of, dash)
        leases: dict[str, list[tuple[str, str, Any]]] = {}
        for row in rows:
            leases[str(row["id"])] = await asyncio.to_thread(
                browse.leased_by, dash.engine, str(row["id"]), resource_ids=user.resource_ids
            )
        unserved = [
            run
            for run in await dash.client.unserved_runs(limit=PAGE_SIZE)
            if user.may_see(run.resource_id)
        ]
        return dash.html(
            request, user, "workers.html", workers=rows, leases=leases, unserved=unserved
        )

    return page
