"""Bearer-token authentication and role checks for every route."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from runledger.control._errors import ApiError
from runledger.store.tokens import Principal, lookup_token

__all__ = ["ROLES_ATTR", "TokenCache", "authenticate", "current_principal", "public", "require"]

ROLES_ATTR = "runledger_roles"
"""Attribute naming the roles a view allows (``require``, the console's ``page``); the
authorisation test reads it for every route of the URL map. ``public`` sets it empty."""

F = TypeVar("F", bound=Callable[..., Any])


class TokenCache:
    """Remember token look-ups for a short time so a request costs no extra round trip.

    A revoked token stops working within ``ttl`` seconds (docs/operations.md says so).
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, token: str, load: Callable[[str], Principal | None]) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(token)
        if hit and hit[0] > now:
            return hit[1]
        principal = load(token)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[token] = (now + self.ttl, principal)
        return principal


def authenticate() -> Principal:
    """Return the principal of the request's bearer token (401 when missing or revoked)."""
    return _authenticate()


def _authenticate() -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    db = current_app.extensions["runledger.db"]
    cache: TokenCache = current_app.extensions["runledger.tokens"]

    def load(secret: str) -> Principal | None:
        with db.connection() as conn:
            return lookup_token(conn, secret)

    principal = cache.get(token.strip(), load)
    if principal is None:
        raise ApiError(401, "invalid or revoked token")
    return principal


def require(*roles: str) -> Callable[[F], F]:
    """Allow the decorated view only to tokens of ``roles``."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            principal = _authenticate()
            if principal.role not in roles:
                raise ApiError(
                    403, f"role {principal.role!r} may not do this; allowed: {', '.join(roles)}"
                )
            g.principal = principal
            return view(*args, **kwargs)

        setattr(inner, ROLES_ATTR, tuple(roles))
        return inner  # type: ignore[return-value]

    return wrap


def public(view: F) -> F:
    """Mark a view as open to anyone (probes, login, the OpenAPI document, static files)."""
    setattr(view, ROLES_ATTR, ())
    return view


def current_principal() -> Principal:
    """Return the principal of the request being served."""
    return g.principal
