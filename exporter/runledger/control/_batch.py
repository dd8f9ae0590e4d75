"""Request bodies: one JSON object parsed into its model, or a batch ``{"<key>": [...]}``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from flask import Response, request
from pydantic import BaseModel, ValidationError

from runledger.control._auth import current_principal
from runledger.control._errors import ApiError, invalid_request
from runledger.validation import FieldError

__all__ = [
    "batch_counts",
    "batch_response",
    "json_body",
    "json_response",
    "parse_body",
    "read_batch",
]

M = TypeVar("M", bound=BaseModel)


def json_body(*, empty: Any = None) -> Any:
    """Return the decoded JSON body, or refuse a body that is not JSON.

    Args:
        empty: what an empty body stands for; None refuses it as not JSON.
    """
    data = request.get_data(cache=True)
    if not data and empty is not None:
        return empty
    if request.mimetype != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from exc


def parse_body(model: type[M]) -> M:
    """Return the request's JSON object (an empty body is ``{}``) validated as ``model``.

    Raises:
        ApiError: 415 when not JSON, 400 naming every invalid field.
    """
    data = json_body(empty={})
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def json_response(payload: Any, status: int = 200) -> Response:
    """Answer ``payload`` serialised by orjson (dataclasses and UUIDs natively)."""
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def batch_counts(statuses: Iterable[str]) -> dict[str, int]:
    """Count a batch's results by status: accepted, duplicate and rejected."""
    found = Counter(statuses)
    return {status: found[status] for status in ("accepted", "duplicate", "rejected")}


def batch_response(results: Sequence[Any], counts: Mapping[str, int]) -> Response:
    """Answer a batch: counts of accepted, duplicate and rejected items, then every result."""
    return json_response(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        }
    )


def read_batch(key: str, limit: int) -> list[Any]:
    """Return the items of ``{"<key>": [...]}``; refuse the whole batch when it is malformed,
    too large, or names a tenant the caller's token may not write."""
    body = json_body()
    if not isinstance(body, dict) or key not in body:
        raise ApiError(400, f'body must be an object {{"{key}": [...]}}')
    extra = sorted(set(body) - {key})
    if extra:
        raise ApiError(
            400,
            f"unknown top-level field(s): {', '.join(extra)}",
            fields=[FieldError(name, "is not a known field") for name in extra],
        )
    items = body[key]
    if not isinstance(items, list) or not items:
        raise ApiError(
            400,
            f"{key} must be a non-empty array",
            fields=[FieldError(key, "must be a non-empty array")],
        )
    if len(items) > limit:
        raise ApiError(413, f"batch of {len(items)} {key}; the limit is {limit} per request")
    principal = current_principal()
    for i, item in enumerate(items):
        tenant = item.get("tenant_id") if isinstance(item, dict) else None
        if isinstance(tenant, str) and not principal.can_write_tenant(tenant):
            problem = FieldError(
                f"{key}[{i}].tenant_id", f"this token may write only tenant {principal.tenant_id!r}"
            )
            raise ApiError(
                403, f"{problem.field}: {problem.message}; nothing was stored", fields=[problem]
            )
    return items
