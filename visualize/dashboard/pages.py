"""The read pages: overview, instances and an instance, runs and a run, their diagrams."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from statewf import browse
from statewf.errors import InvalidInput, StatewfError
from visualize.api import history_diagram, instance_diagram
from visualize.dashboard.forms import fields_of
from visualize.dashboard.live import token as live_token
from visualize.dashboard.render import inline_svg
from visualize.dashboard.schemas import payload_schemas, wait_form_schema
from visualize.dashboard.security import User
from visualize.run import run_diagram

if TYPE_CHECKING:
    from visualize.dashboard.app import Dashboard, Handler

#: Rows on one page of a list.
PAGE_SIZE = 50
RUN_KIND = "workflow"
INSTANCE_STATUSES = ("active", "final")
RUN_STATUSES = (
    "pending",
    "running",
    "waiting",
    "paused",
    "completed",
    "failed",
    "cancelled",
    "dead",
)


def query_text(request: Request, name: str) -> str | None:
    """A query parameter, stripped; None when absent or empty."""
    value = request.query_params.get(name, "").strip()
    return value or None


def _time(request: Request, name: str) -> datetime | None:
    raw = query_text(request, name)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def overview(dash: Dashboard) -> Handler:
    """Counts by machine and status, waiting approvals, dead letters, workers, failures."""

    async def page(request: Request, user: User) -> Response:
        scope = user.resource_ids
        counts = await dash.cached(
            ("counts", scope), 5.0, lambda: browse.status_counts(dash.engine, resource_ids=scope)
        )
        grouped: dict[tuple[str, str], dict[str, int]] = {}
        for row in counts:
            grouped.setdefault((row.kind, row.machine), {})[row.status] = row.count

        def newest(**filters: object) -> list[object]:
            page = browse.newest(dash.engine, resource_ids=scope, limit=10, **filters)  # type: ignore[arg-type]
            return list(page.items)

        waiting, dead, failed, workers = await asyncio.gather(
            asyncio.to_thread(newest, kind=RUN_KIND, status="waiting", waiting_for="approval:"),
            asyncio.to_thread(newest, kind=RUN_KIND, status="dead"),
            asyncio.to_thread(newest, kind=RUN_KIND, status="failed"),
            asyncio.to_thread(live_workers_of, dash),
        )
        return dash.html(
            request,
            user,
            "overview.html",
            token=await asyncio.to_thread(live_token, dash, user, "list:all"),
            grouped=sorted(grouped.items()),
            waiting=waiting,
            dead=dead,
            failed=failed,
            workers=workers,
        )

    return page


def live_workers_of(dash: Dashboard) -> list[dict[str, object]]:
    """Workers that heart-beat in the last two minutes (durable's own query)."""
    from durable.worker import live_workers

    return live_workers(dash.engine)


def _page_args(request: Request, user: User) -> dict[str, object]:
    return {
        "resource_ids": user.scope(query_text(request, "resource")),
        "cursor": query_text(request, "cursor"),
        "limit": PAGE_SIZE,
    }


def instances(dash: Dashboard) -> Handler:
    """Machine instances, newest first, filtered by machine, state, status and resource."""

    async def page(request: Request, user: User) -> Response:
        status = query_text(request, "status")
        found = await asyncio.to_thread(
            browse.newest,
            dash.engine,
            kind="machine",
            machine=query_text(request, "machine"),
            state=query_text(request, "state"),
            status=status,
            **_page_args(request, user),  # type: ignore[arg-type]
        )
        machines = sorted({m.name for m in dash.engine.machines()})
        return dash.html(
            request,
            user,
            "instances.html",
            page=found,
            filters=dict(request.query_params),
            machines=machines,
            statuses=INSTANCE_STATUSES,
        )

    return page


def instance(dash: Dashboard) -> Handler:
    """One instance: state, context, allowed events with forms, history, diagram, time travel."""

    async def page(request: Request, user: User) -> Response:
        instance_id = request.path_params["id"]
        current = await dash.instance_for(user, instance_id)
        base = request.scope.get("root_path", "").rstrip("/")
        if current.kind == RUN_KIND:
            return RedirectResponse(f"{base}/runs/{instance_id}", status_code=303)
        raw_seq = query_text(request, "seq")
        seq = None
        if raw_seq is not None:
            if not raw_seq.isdigit():
                raise InvalidInput(f"seq must be a whole number, got {raw_seq!r}")
            seq = int(raw_seq)
        shown = current
        if seq is not None and seq != current.version:
            shown = await dash.engine.state_at_async(instance_id, seq)
        history = await dash.engine.history_async(instance_id)
        try:
            allowed = await dash.engine.allowed_events_async(instance_id)
            allowed_note = None
        except StatewfError as exc:
            allowed, allowed_note = [], exc.message
        schemas = await asyncio.to_thread(payload_schemas, dash.engine, current)
        forms = [(event, fields_of(schemas.get(event))) for event in allowed]
        return dash.html(
            request,
            user,
            "instance.html",
            token=await asyncio.to_thread(live_token, dash, user, f"instance:{instance_id}"),
            inst=current,
            shown=shown,
            seq=seq,
            history=history,
            forms=forms,
            allowed_note=allowed_note,
        )

    return page


def instance_svg(dash: Dashboard) -> Handler:
    """The instance's diagram as an inline ``<svg>`` fragment (current state and path taken)."""

    async def fragment(request: Request, user: User) -> Response:
        instance_id = request.path_params["id"]
        current = await dash.instance_for(user, instance_id)
        raw = query_text(request, "seq")
        seq = int(raw) if raw and raw.isdigit() else None
        draw = history_diagram if request.query_params.get("view") == "path" else instance_diagram
        diagram = await asyncio.to_thread(
            draw, dash.engine, current.id, seq=seq, resource_id=current.resource_id
        )
        return HTMLResponse(await asyncio.to_thread(inline_svg, diagram))

    return fragment


def runs(dash: Dashboard) -> Handler:
    """Workflow runs, newest first, filtered by workflow, status, queue, resource and time."""

    async def page(request: Request, user: User) -> Response:
        found = await asyncio.to_thread(
            browse.newest,
            dash.engine,
            kind=RUN_KIND,
            machine=query_text(request, "workflow"),
            status=query_text(request, "status"),
            queue=query_text(request, "queue"),
            created_after=_time(request, "after"),
            created_before=_time(request, "before"),
            **_page_args(request, user),  # type: ignore[arg-type]
        )
        routes = await asyncio.to_thread(browse.routes, dash.engine, [i.id for i in found.items])
        return dash.html(
            request,
            user,
            "runs.html",
            page=found,
            routes=routes,
            filters=dict(request.query_params),
            statuses=RUN_STATUSES,
        )

    return page


def run(dash: Dashboard) -> Handler:
    """One run: status, what it waits on, progress, timeline, log, actions."""

    async def page(request: Request, user: User) -> Response:
        run_id = request.path_params["id"]
        found = await dash.run_for(user, run_id)
        progress, timeline, routes = await asyncio.gather(
            dash.client.check_progress(run_id),
            dash.client.get_timeline(run_id),
            asyncio.to_thread(browse.routes, dash.engine, [run_id]),
        )
        waiting = found.waiting or {}
        event = str(waiting.get("event") or "")
        approval = event.removeprefix("approval:") if event.startswith("approval:") else None
        human_task = event.removeprefix("task:") if event.startswith("task:") else None
        task = waiting.get("task") if isinstance(waiting.get("task"), dict) else None
        answer = fields_of(wait_form_schema(waiting))
        return dash.html(
            request,
            user,
            "run.html",
            token=await asyncio.to_thread(live_token, dash, user, f"run:{run_id}"),
            run=found,
            progress=progress,
            timeline=timeline,
            route=routes.get(run_id, {}),
            approval=approval,
            human_task=human_task,
            task=task,
            waiting_event=event or None,
            answer_fields=answer,
            finished=found.finished,
        )

    return page


def run_log(dash: Dashboard) -> Handler:
    """Every row of the run's log, as an HTML fragment the run page loads after itself."""

    async def fragment(request: Request, user: User) -> Response:
        found = await dash.run_for(user, request.path_params["id"])
        history = await dash.engine.history_async(found.id)
        return dash.html(request, user, "run_log.html", history=history)

    return fragment


def run_svg(dash: Dashboard) -> Handler:
    """The run's diagram as an inline ``<svg>`` fragment."""

    async def fragment(request: Request, user: User) -> Response:
        found = await dash.run_for(user, request.path_params["id"])
        diagram = await asyncio.to_thread(run_diagram, dash.engine, found.id)
        return HTMLResponse(await asyncio.to_thread(inline_svg, diagram))

    return fragment
