"""Owners' embed links: signed, expiring, for one tenant; any edit breaks the signature."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from runledger import _env
from runledger.store.sessions import signing_key

__all__ = ["EmbedRefused", "mint", "verify"]

_SALT = "runledger-embed-v1"


class EmbedRefused(Exception):
    """The link is not valid: forged, edited, or past its expiry (the message says which)."""


def _serializer() -> URLSafeSerializer:
    key: bytes | None = current_app.extensions.get("runledger.embed_key")
    if key is None:
        secret = os.environ.get(_env.CONSOLE_SECRET)
        key = secret.encode() if secret else signing_key(current_app.extensions["runledger.db"])
        current_app.extensions["runledger.embed_key"] = key
    return URLSafeSerializer(key, salt=_SALT)


def mint(tenant_id: str, ttl_s: int, *, now: float | None = None) -> tuple[str, datetime]:
    """Return a signed link token for ``tenant_id`` and when it expires."""
    exp = int((now if now is not None else time.time()) + ttl_s)
    token = _serializer().dumps({"t": tenant_id, "exp": exp})
    return str(token), datetime.fromtimestamp(exp, UTC)


def verify(token: str, *, now: float | None = None) -> str:
    """Return the tenant of a valid, unexpired link token."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        raise EmbedRefused("this link is not valid: it was edited or not issued here") from None
    if not isinstance(data, dict) or not isinstance(data.get("t"), str):
        raise EmbedRefused("this link is not valid")
    if int(data.get("exp", 0)) <= (now if now is not None else time.time()):
        raise EmbedRefused("this link has expired: ask for a new one")
    return str(data["t"])
