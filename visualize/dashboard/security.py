"""Who is asking, what they may see, and proof that a form came from the dashboard.

A request is answered only for a :class:`User`. The user comes from the
application's ``auth`` callable, from a shared token (``Authorization: Bearer``,
or a cookie set by ``/login?token=...``), or, when neither is configured, from
being on the same machine (a loopback client address). Every page and action
asks :meth:`User.may_see` about the ``resource_id`` of what it touches.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module before it knows the extra is installed
    from starlette.requests import HTTPConnection

#: The cookie that carries the shared token after ``/login``.
TOKEN_COOKIE = "statewf_dashboard_token"
#: The form field and header that carry the CSRF token of an action.
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class User:
    """The person behind a request and the resources they may see.

    ``resource_ids=None`` sees every instance (also those without a resource);
    otherwise only instances whose ``resource_id`` is in the set.
    """

    name: str
    resource_ids: frozenset[str] | None = None

    def may_see(self, resource_id: str | None) -> bool:
        """Whether an instance of ``resource_id`` is visible to this user."""
        return self.resource_ids is None or (
            resource_id is not None and resource_id in self.resource_ids
        )

    def scope(self, wanted: str | None) -> Collection[str] | None:
        """The resource ids a list may show, narrowed to ``wanted`` when one is asked for."""
        if wanted:
            return {wanted} if self.may_see(wanted) else set()
        return self.resource_ids


#: What an application passes as ``auth``: the user of a request, or None to refuse it.
AuthCallable = Callable[["HTTPConnection"], "User | Awaitable[User | None] | None"]


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Finds the user of a request from an auth callable, a token, or a loopback address."""

    def __init__(self, auth: AuthCallable | None, token: str | None) -> None:
        self.auth = auth
        self.token = token

    @property
    def configured(self) -> bool:
        """Whether requests are authenticated (and not only trusted for being local)."""
        return self.auth is not None or self.token is not None

    def token_matches(self, offered: str | None) -> bool:
        """Whether ``offered`` is the shared token (compared in constant time)."""
        if self.token is None or not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())

    async def user(self, conn: HTTPConnection) -> User | None:
        """The user of this request, or None when it is not allowed in."""
        if self.auth is not None:
            found = self.auth(conn)
            if inspect.isawaitable(found):
                found = await found
            return found if isinstance(found, User) else None
        if self.token is not None:
            header = conn.headers.get("authorization", "")
            offered = header[7:] if header.lower().startswith("bearer ") else None
            if self.token_matches(offered or conn.cookies.get(TOKEN_COOKIE)):
                return User("token")
            return None
        client = conn.client.host if conn.client else None
        return User("local") if is_loopback(client) else None


class Csrf:
    """Tokens that tie an action's form to the user it was rendered for."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def token(self, user: User) -> str:
        """The CSRF token for this user's forms."""
        return hmac.new(self.secret, f"csrf:{user.name}".encode(), hashlib.sha256).hexdigest()

    def valid(self, user: User, offered: str | None) -> bool:
        """Whether ``offered`` is this user's token."""
        return bool(offered) and hmac.compare_digest(
            str(offered).encode(), self.token(user).encode()
        )
