"""The dashboard application: :func:`create_app` and the guard every route goes through.

The guard finds the user (or answers 401), refuses actions in read-only mode and
actions without this user's CSRF token (403), turns statewf errors into pages with
the error's message and a fitting status, and adds headers that keep the pages
from running script they did not ship (a strict Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import durable
import statewf
from durable.errors import RunFinished
from statewf.errors import (
    ConcurrencyConflict,
    EventRejected,
    InstanceNotFound,
    InvalidInput,
    StatewfError,
)
from visualize.dashboard.render import environment
from visualize.dashboard.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    TOKEN_COOKIE,
    AuthCallable,
    Authenticator,
    Csrf,
    User,
)
from visualize.errors import VisualizeError

Handler = Callable[[Request, User], Awaitable[Response]]

_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@dataclass
class Dashboard:
    """What every route shares: the engines, the settings, the templates."""

    engine: statewf.Engine
    client: durable.Client | durable.WorkflowEngine
    authn: Authenticator
    csrf: Csrf
    read_only: bool
    poll_interval: float
    env: Environment = field(default_factory=environment)
    on_close: list[Callable[[], None]] = field(default_factory=list)
    _cache: dict[Any, tuple[float, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------ rendering

    def html(
        self, request: Request, user: User, template: str, status: int = 200, **ctx: Any
    ) -> Response:
        """A page (or only its live region, when the page's script asks for it)."""
        values = {
            "request": request,
            "user": user,
            "base": request.scope.get("root_path", "").rstrip("/"),
            "csrf": self.csrf.token(user),
            "read_only": self.read_only,
            **ctx,
        }
        tpl = self.env.get_template(template)
        if request.headers.get("x-live") == "1" and "live" in tpl.blocks:
            body = "".join(tpl.blocks["live"](tpl.new_context(values)))
        else:
            body = tpl.render(values)
        return HTMLResponse(body, status_code=status)

    async def cached(self, key: Any, seconds: float, fn: Callable[[], Any]) -> Any:
        """``fn()`` in a thread, remembered for ``seconds`` (for the overview's counts)."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < seconds:
            return hit[1]
        value = await asyncio.to_thread(fn)
        if len(self._cache) > 1000:  # one entry per scope: forget them all now and then
            self._cache.clear()
        self._cache[key] = (now, value)
        return value

    # ------------------------------------------------------------ scoped reads

    async def instance_for(self, user: User, instance_id: str) -> statewf.Instance:
        """An instance this user may see; :class:`InstanceNotFound` otherwise (same message)."""
        try:
            snapshot = await self.engine.get_async(instance_id)
        except InstanceNotFound:
            snapshot = None
        if snapshot is None or not user.may_see(snapshot.resource_id):
            raise InstanceNotFound(
                f"no instance {instance_id!r} that you may see; check the id",
                instance_id=instance_id,
            )
        return snapshot

    async def run_for(self, user: User, run_id: str) -> durable.WorkflowRun:
        """A run this user may see; :class:`durable.RunNotFound` otherwise."""
        try:
            run = await self.client.get_run(run_id)
        except durable.RunNotFound:
            run = None
        if run is None or not user.may_see(run.resource_id):
            raise durable.RunNotFound(
                f"no run {run_id!r} that you may see; check the id", instance_id=run_id
            )
        return run

    # ------------------------------------------------------------ the guard

    def guard(self, handler: Handler, *, action: bool = False) -> Callable[[Request], Any]:
        """Wrap a route: authenticate, check actions, map errors, add security headers."""

        async def endpoint(request: Request) -> Response:
            response = await self._answer(request, handler, action)
            for name, value in _HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return endpoint

    async def _answer(self, request: Request, handler: Handler, action: bool) -> Response:
        user = await self.authn.user(request)
        if user is None:
            return self._refuse(request, 401, self._how_to_sign_in())
        if action:
            if self.read_only:
                return self._refuse(request, 403, "this dashboard is read-only")
            form = await request.form()
            offered = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD) or "")
            if not self.csrf.valid(user, offered) or not _same_origin(request):
                return self._refuse(request, 403, "the form is stale or came from another site")
        try:
            return await handler(request, user)
        except StatewfError as exc:
            return self._failed(request, user, exc)

    def _how_to_sign_in(self) -> str:
        if self.authn.auth is not None:
            return "not signed in, or not allowed here: sign in to the application first"
        if self.authn.token is not None:
            return (
                "sign in: open /login?token=YOUR_TOKEN once, or send "
                "'Authorization: Bearer YOUR_TOKEN'"
            )
        return (
            "this dashboard answers only this machine; to open it to others, start it "
            "with --token SECRET (or STATEWF_DASHBOARD_TOKEN) and sign in with it"
        )

    def _wants_json(self, request: Request) -> bool:
        return request.headers.get("accept", "").startswith("application/json")

    def _refuse(self, request: Request, status: int, message: str) -> Response:
        if self._wants_json(request):
            return JSONResponse({"ok": False, "error": message}, status_code=status)
        tpl = self.env.get_template("refused.html")
        base = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(tpl.render(message=message, status=status, base=base), status)

    def _failed(self, request: Request, user: User, exc: StatewfError) -> Response:
        status = 400
        if isinstance(exc, InstanceNotFound):
            status = 404
        elif isinstance(exc, RunFinished | ConcurrencyConflict):
            status = 409
        elif isinstance(exc, EventRejected | InvalidInput | VisualizeError):
            status = 400
        message = f"{type(exc).__name__}: {exc.message}"
        if self._wants_json(request):
            return JSONResponse({"ok": False, "error": message}, status_code=status)
        back = request.headers.get("referer") if request.method == "POST" else None
        return self.html(request, user, "error.html", status, message=message, back=back)


def _same_origin(request: Request) -> bool:
    """Whether the request's Origin (when the browser sends one) is this site."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def done(request: Request, to: str, **data: Any) -> Response:
    """The answer to a successful action: JSON for the page's script, else a redirect."""
    if request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"ok": True, **data})
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(base + to, status_code=303)


def create_app(
    engine: statewf.Engine,
    client: durable.Client | durable.WorkflowEngine | None = None,
    *,
    auth: AuthCallable | None = None,
    token: str | None = None,
    read_only: bool = False,
    secret: bytes | None = None,
    poll_interval: float = 1.0,
) -> Starlette:
    """The dashboard as an ASGI app, to serve alone or ``mount`` in a Starlette/FastAPI app.

    Args:
        engine: the statewf engine on the database to show (its registered machines
            give payload schemas; stored definitions are used otherwise).
        client: a :class:`durable.Client` (or engine) on the same database for runs;
            one is made on ``engine`` when omitted.
        auth: called with each request; returns the :class:`User` (and the
            ``resource_id`` s they may see) or None to refuse it.
        token: a shared secret instead of ``auth`` (``Authorization: Bearer`` or
            ``/login?token=``). With neither, only loopback clients are let in.
        read_only: refuse every action.
        secret: key of the CSRF tokens (random per process when omitted).
        poll_interval: seconds between two looks for changes behind a live page.
    """
    from visualize.dashboard import actions, inbox, live, pages  # the routes import Dashboard

    if auth is not None and token is not None:
        raise InvalidInput("pass auth= or token= to the dashboard, not both")
    dash = Dashboard(
        engine=engine,
        client=client if client is not None else durable.Client(engine),
        authn=Authenticator(auth, token),
        csrf=Csrf(secret or secrets.token_bytes(32)),
        read_only=read_only,
        poll_interval=poll_interval,
    )
    g = dash.guard
    routes = [
        Route("/", g(pages.overview(dash))),
        Route("/instances", g(pages.instances(dash))),
        Route("/instances/{id:path}/diagram", g(pages.instance_svg(dash))),
        Route("/instances/{id:path}/send", g(actions.send(dash), action=True), methods=["POST"]),
        Route("/instances/{id:path}", g(pages.instance(dash))),
        Route("/runs", g(pages.runs(dash))),
        Route("/runs/{id:path}/diagram", g(pages.run_svg(dash))),
        Route("/runs/{id:path}/log", g(pages.run_log(dash))),
        Route(
            "/runs/{id:path}/do/{action}",
            g(actions.run_action(dash), action=True),
            methods=["POST"],
        ),
        Route("/runs/{id:path}", g(pages.run(dash))),
        Route("/tasks", g(inbox.tasks(dash))),
        Route("/dead-letters", g(inbox.dead_letters(dash))),
        Route("/workers", g(inbox.workers(dash))),
        Route("/live", g(live.stream(dash))),
        Route("/login", _login(dash)),
        Mount("/static", StaticFiles(packages=[("visualize.dashboard", "static")]), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        for close in dash.on_close:
            close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = dash
    return app


def _login(dash: Dashboard) -> Callable[[Request], Awaitable[Response]]:
    async def login(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        offered = request.query_params.get("token")
        if not dash.authn.token_matches(offered):
            return dash._refuse(request, 401, "that token is not this dashboard's")
        response = RedirectResponse(base + "/", status_code=303)
        response.set_cookie(
            TOKEN_COOKIE, str(offered), httponly=True, samesite="strict", path=base or "/"
        )
        return response

    return login
