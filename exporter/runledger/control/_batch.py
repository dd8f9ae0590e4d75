"""Request bodies: one JSON object parsed into its model, or a batch ``{"<key>": [...]}``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson
from flask import Response, request
from pydantic import BaseModel, ValidationError

from runledger.control._auth import current_principal
from runledger.control._errors import ApiError, invalid_request
from runledger.validation import FieldError, field_errors

__all__ = [
    "FUTURE_SKEW",
    "batch_counts",
    "batch_records",
    "batch_response",
    "json_body",
    "json_response",
    "parse_body",
    "read_batch",
    "rejected",
    "unknown_tenant",
]

M = TypeVar("M", bound=BaseModel)

FUTURE_SKEW = timedelta(minutes=5)
"""How far ahead of the server clock a record's ``created_at`` may be."""


class _Dated(Protocol):
    @property
    def created_at(self) -> datetime: ...


D = TypeVar("D", bound=_Dated)


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


def rejected(index: int, errors: list[FieldError]) -> dict[str, Any]:
    """The result of a batch's record ``index`` refused for ``errors``."""
    return {"index": index, "status": "rejected", "errors": [e.as_dict() for e in errors]}


def unknown_tenant(index: int, tenant_id: str) -> dict[str, Any]:
    """The result of a batch's record ``index`` naming a tenant the ledger does not know."""
    return rejected(
        index, [FieldError(f"records[{index}].tenant_id", f"unknown tenant {tenant_id!r}")]
    )


def batch_records(
    raw: Sequence[Any], parse: Callable[[Any], D], results: list[dict[str, Any]]
) -> Iterator[tuple[int, D]]:
    """Yield (index, record) for each item of a ``records`` batch that ``parse`` accepts and
    that is not dated in the future; append a rejection to ``results`` for each other one
    (the caller appends the yielded records' results, so ``results`` stays in order)."""
    now = datetime.now(UTC)
    for i, item in enumerate(raw):
        try:
            rec = parse(item)
        except ValidationError as exc:
            results.append(rejected(i, field_errors(exc, prefix=f"records[{i}]")))
            continue
        if rec.created_at > now + FUTURE_SKEW:
            problem = "is in the future (more than 5 minutes ahead of the server clock)"
            results.append(rejected(i, [FieldError(f"records[{i}].created_at", problem)]))
            continue
        yield i, rec
