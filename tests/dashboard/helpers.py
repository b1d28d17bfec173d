"""Helpers of the dashboard tests: URLs of ids and the CSRF token of a page."""

from __future__ import annotations

import re
from urllib.parse import quote

from starlette.testclient import TestClient


def path(kind: str, ident: str, *rest: str) -> str:
    """``/runs/<id>/...`` with the id quoted as the dashboard quotes it."""
    return "/".join([f"/{kind}", quote(ident, safe=""), *rest])


def csrf_of(client: TestClient, page: str = "/") -> str:
    """The CSRF token the dashboard put in a page for this client's user."""
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get(page).text)
    assert found, "the page has no CSRF token"
    return found.group(1)


def post(client: TestClient, url: str, data: dict[str, str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    """A form POST with the user's CSRF token, as the page's form sends it."""
    return client.post(url, data={"csrf": csrf_of(client), **(data or {})}, **kw)  # type: ignore[arg-type]
