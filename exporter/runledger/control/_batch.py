"""The envelope every batch endpoint shares: ``{"<key>": [...]}`` with tenant checks."""

from __future__ import annotations

from typing import Any

import orjson
from flask import request

from runledger.control._auth import current_principal
from runledger.control._errors import ApiError

__all__ = ["json_body", "read_batch"]


def json_body() -> Any:
    """Return the decoded JSON body, or refuse a body that is not JSON."""
    if request.mimetype != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        return orjson.loads(request.get_data(cache=True))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from exc


def read_batch(key: str, limit: int) -> list[Any]:
    """Return the items of ``{"<key>": [...]}``; refuse the whole batch when it is malformed,
    too large, or names a tenant the caller's token may not write."""
    body = json_body()
    if not isinstance(body, dict) or key not in body:
        raise ApiError(400, f'body must be an object {{"{key}": [...]}}')
    extra = sorted(set(body) - {key})
    if extra:
        raise ApiError(400, f"unknown top-level field(s): {', '.join(extra)}")
    items = body[key]
    if not isinstance(items, list) or not items:
        raise ApiError(400, f"{key} must be a non-empty array")
    if len(items) > limit:
        raise ApiError(413, f"batch of {len(items)} {key}; the limit is {limit} per request")
    principal = current_principal()
    for i, item in enumerate(items):
        tenant = item.get("tenant_id") if isinstance(item, dict) else None
        if isinstance(tenant, str) and not principal.can_write_tenant(tenant):
            raise ApiError(
                403,
                f"{key}[{i}].tenant_id: this token may write only tenant "
                f"{principal.tenant_id!r}; nothing was stored",
            )
    return items
