"""The actions: every one a POST behind the guard (user, CSRF, read-only), scoped to the user.

Each action first loads its target as the user may see it, then calls the engine
with that target's ``resource_id``, so a wrong tenant is refused twice. The acting
user is recorded in the log: as the reviewer of an approval, in the reason of a
cancel, retry or discard, and as ``by`` of a pause, resume, fast-forward or event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from statewf.errors import InvalidInput
from visualize.dashboard.app import done
from visualize.dashboard.forms import fields_of, payload_from
from visualize.dashboard.schemas import answer_schema, payload_schemas, task_answer_schema
from visualize.dashboard.security import User

if TYPE_CHECKING:
    from visualize.dashboard.app import Dashboard, Handler

#: The actions a run page offers.
RUN_ACTIONS = frozenset(
    {
        "cancel",
        "pause",
        "resume",
        "fast-forward",
        "retry",
        "discard",
        "fork",
        "trigger",
        "approve",
        "reject",
        "complete",
    }
)


def _by(user: User, reason: str | None) -> str:
    """A reason with the acting user in front: ``by alice: wrong amount``."""
    return f"by {user.name}: {reason}" if reason else f"by {user.name}"


def send(dash: Dashboard) -> Handler:
    """Send an event to an instance, its payload read from the event's schema form."""

    async def action(request: Request, user: User) -> Response:
        instance_id = request.path_params["id"]
        current = await dash.instance_for(user, instance_id)
        form = await request.form()
        event = str(form.get("event") or "").strip()
        if not event:
            raise InvalidInput(f"name the event to send to instance {instance_id!r}")
        schemas = await asyncio.to_thread(payload_schemas, dash.engine, current)
        payload = payload_from(form, fields_of(schemas.get(event)))
        after = await dash.engine.send_async(
            instance_id, event, payload, resource_id=current.resource_id
        )
        return done(
            request, f"/instances/{quote(instance_id)}", state=after.state, status=after.status
        )

    return action


def _text(form: Any, name: str) -> str | None:
    value = str(form.get(name) or "").strip()
    return value or None


def _answer(form: Any, waiting: Mapping[str, Any] | None) -> Any:
    """A person's answer to an approval or human task, read from its schema's form."""
    return payload_from(form, fields_of(task_answer_schema(waiting)))


def run_action(dash: Dashboard) -> Handler:
    """Cancel, pause, resume, fast-forward, retry, discard, fork, trigger, approve, reject or
    complete a human task."""

    async def action(request: Request, user: User) -> Response:
        run_id = request.path_params["id"]
        name = request.path_params["action"]
        if name not in RUN_ACTIONS:
            raise InvalidInput(
                f"unknown action {name!r}; use one of {', '.join(sorted(RUN_ACTIONS))}"
            )
        found = await dash.run_for(user, run_id)
        scope = found.resource_id
        form = await request.form()
        reason = _text(form, "reason")
        c = dash.client
        to = f"/runs/{quote(run_id)}"
        if name == "cancel":
            after = await c.cancel_workflow(run_id, resource_id=scope, reason=_by(user, reason))
        elif name == "pause":
            after = await c.pause_workflow(run_id, resource_id=scope, by=user.name)
        elif name == "resume":
            after = await c.resume_workflow(run_id, resource_id=scope, by=user.name)
        elif name == "fast-forward":
            data = payload_from(form, [])
            after = await c.fast_forward_workflow(run_id, data, resource_id=scope, by=user.name)
        elif name == "retry":
            after = await c.retry_run(run_id, reason=_by(user, reason), resource_id=scope)
        elif name == "discard":
            after = await c.discard_run(run_id, reason=_by(user, reason), resource_id=scope)
        elif name == "fork":
            step = _text(form, "from_step")
            if step is None:
                raise InvalidInput(f"choose the step to fork run {run_id!r} from")
            after = await c.fork_run(run_id, from_step=step, resource_id=scope)
            to = f"/runs/{quote(after.id)}"
        elif name == "trigger":
            event = _text(form, "event")
            if event is None:
                raise InvalidInput(f"name the event to send to run {run_id!r}")
            waiting = found.waiting or {}
            fields = fields_of(answer_schema(waiting)) if waiting.get("event") == event else []
            data = payload_from(form, fields)
            after = await c.trigger_event(run_id, event, data, resource_id=scope, by=user.name)
        elif name == "approve":
            after = await c.approve(
                run_id,
                reviewer=user.name,
                comment=reason,
                step=_text(form, "step"),
                resource_id=scope,
                answer=_answer(form, found.waiting) if task_answer_schema(found.waiting) else None,
            )
        elif name == "complete":
            after = await c.complete_task(
                run_id,
                _answer(form, found.waiting),
                reviewer=user.name,
                comment=reason,
                step=_text(form, "step"),
                resource_id=scope,
            )
        else:
            if reason is None:
                raise InvalidInput(f"rejecting run {run_id!r} needs a reason; write one")
            after = await c.reject(
                run_id,
                reviewer=user.name,
                reason=reason,
                step=_text(form, "step"),
                resource_id=scope,
            )
        base = request.scope.get("root_path", "").rstrip("/")
        moved = base + to if after.id != run_id else None
        return done(request, to, run=after.id, status=after.status, moved=moved)

    return action
