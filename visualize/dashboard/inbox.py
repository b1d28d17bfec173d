"""The operator's inboxes: human tasks waiting for an answer, dead letters, live workers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from statewf import browse
from visualize.dashboard.forms import fields_of
from visualize.dashboard.live import token as live_token
from visualize.dashboard.pages import PAGE_SIZE, RUN_KIND, live_workers_of, query_text
from visualize.dashboard.schemas import answer_schema
from visualize.dashboard.security import User

if TYPE_CHECKING:
    from visualize.dashboard.app import Dashboard, Handler


def tasks(dash: Dashboard) -> Handler:
    """Runs waiting for a person: approvals (approve or reject) and events with an answer form."""

    async def page(request: Request, user: User) -> Response:
        kind = query_text(request, "kind") or "approval"
        found = await asyncio.to_thread(
            browse.newest,
            dash.engine,
            kind=RUN_KIND,
            status="waiting",
            machine=query_text(request, "workflow"),
            waiting_for="approval:" if kind == "approval" else "",
            resource_ids=user.scope(query_text(request, "resource")),
            cursor=query_text(request, "cursor"),
            limit=PAGE_SIZE,
        )
        items: list[dict[str, Any]] = []
        for snap in found.items:
            waiting = snap.context.get("waiting") or {}
            event = str(waiting.get("event") or "")
            if kind != "approval" and (not event or event.startswith("approval:")):
                continue
            items.append(
                {
                    "snap": snap,
                    "waiting": waiting,
                    "step": event.removeprefix("approval:"),
                    "event": event,
                    "approval": event.startswith("approval:"),
                    "fields": fields_of(answer_schema(waiting)),
                    "input": snap.context.get("input"),
                    "assignee": snap.context.get("assignee") or waiting.get("assignee"),
                }
            )
        return dash.html(
            request,
            user,
            "tasks.html",
            items=items,
            page=found,
            kind=kind,
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
    """Workers that heart-beat lately: queues, labels, held leases, last heartbeat."""

    async def page(request: Request, user: User) -> Response:
        rows = await asyncio.to_thread(live_workers_of, dash)
        leases: dict[str, list[tuple[str, str, Any]]] = {}
        for row in rows:
            leases[str(row["id"])] = await asyncio.to_thread(
                browse.leased_by, dash.engine, str(row["id"]), resource_ids=user.resource_ids
            )
        return dash.html(request, user, "workers.html", workers=rows, leases=leases)

    return page
