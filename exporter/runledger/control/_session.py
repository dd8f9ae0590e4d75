"""Console login sessions: a cookie naming a server-side session, CSRF on every form.

Pages never take bearer tokens: a person logs in once with a token (docs/console.md says
why), and the cookie is ``Secure``, ``HttpOnly`` and ``SameSite=Strict``. Every POST carries
the session's CSRF token in a hidden ``csrf_token`` field, compared in constant time.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, g, redirect, render_template, request, url_for

from runledger.control._auth import ROLES_ATTR
from runledger.control._stores import app_store
from runledger.store.sessions import Session, SessionStore
from runledger.store.tokens import Principal

__all__ = ["COOKIE", "PageError", "page", "sessions", "viewer"]

COOKIE = "rl_session"

F = TypeVar("F", bound=Callable[..., Any])


class PageError(Exception):
    """A refusal answered as an HTML page with a status (403, 404, 400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sessions() -> SessionStore:
    return app_store("runledger.sessions", SessionStore)


def _session() -> Session | None:
    sid = request.cookies.get(COOKIE)
    if not sid or len(sid) > 200:
        return None
    return sessions().get(sid)


def viewer() -> Principal:
    """Return who the page acts as: the session's principal, or the impersonated owner."""
    return g.viewer


def page(*roles: str) -> Callable[[F], F]:
    """Serve the decorated page only to a logged-in session of ``roles``.

    No session: redirect to ``/login``. A POST without the session's CSRF token: 400.
    Support impersonating an owner is treated as that tenant's owner (roles must allow
    ``owner``); the real principal stays in ``g.actor`` for the audit log.
    """

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            session = _session()
            if session is None:
                if request.method == "GET":
                    return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
                raise PageError(401, "log in first: your session ended or never existed")
            actor = session.principal
            effective = actor
            if session.impersonating and actor.role == "support":
                effective = Principal(f"{actor.label} (as owner)", "owner", session.impersonating)
            if effective.role not in roles:
                raise PageError(
                    403,
                    f"role {effective.role!r} may not open this page; allowed: {', '.join(roles)}",
                )
            if request.method == "POST":
                sent = request.form.get("csrf_token", "")
                if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
                    raise PageError(
                        400, "the form's CSRF token is missing or wrong: reload the page and retry"
                    )
            g.session = session
            g.viewer = effective
            g.actor = actor
            return view(*args, **kwargs)

        setattr(inner, ROLES_ATTR, tuple(roles))
        return inner  # type: ignore[return-value]

    return wrap


def check_tenant(tenant_id: str) -> None:
    """Refuse a tenant-bound viewer looking at another tenant (404: do not confirm it)."""
    who = viewer()
    if who.tenant_id is not None and who.tenant_id != tenant_id:
        raise PageError(404, "no such page")


def render_error(exc: PageError) -> tuple[Response | str, int]:
    return render_template("error.html", message=exc.message, status=exc.status), exc.status
