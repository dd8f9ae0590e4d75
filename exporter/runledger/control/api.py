"""Ingest API: ``POST /v1/events``."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from runledger.control._auth import current_principal, require
from runledger.control._errors import ApiError
from runledger.events import MAX_BATCH_EVENTS, EventError, validate_batch
from runledger.store import EventResult, Ingestor

__all__ = ["bp"]

bp = Blueprint("api", __name__, url_prefix="/v1")


def _json_body() -> Any:
    if not request.mimetype or request.mimetype != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        return orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from exc


@bp.post("/events")
@require("agent", "admin")
def post_events() -> Response:
    """Store a batch of events; answer one result per event, in order."""
    body = _json_body()
    if not isinstance(body, dict) or "events" not in body:
        raise ApiError(400, 'body must be an object {"events": [...]}')
    extra = sorted(set(body) - {"events"})
    if extra:
        raise ApiError(400, f"unknown top-level field(s): {', '.join(extra)}")
    raw = body["events"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "events must be a non-empty array")
    if len(raw) > MAX_BATCH_EVENTS:
        raise ApiError(
            413, f"batch of {len(raw)} events; the limit is {MAX_BATCH_EVENTS} per request"
        )
    principal = current_principal()
    for i, item in enumerate(raw):
        tenant = item.get("tenant_id") if isinstance(item, dict) else None
        if isinstance(tenant, str) and not principal.can_write_tenant(tenant):
            raise ApiError(
                403,
                f"events[{i}].tenant_id: this token may write only tenant "
                f"{principal.tenant_id!r}; nothing was stored",
            )
    validated = validate_batch(raw)
    results: dict[int, EventResult] = {}
    good, good_idx = [], []
    for i, item in enumerate(validated):
        if isinstance(item, list):
            event_id = raw[i].get("event_id") if isinstance(raw[i], dict) else None
            results[i] = EventResult(
                i, "rejected", event_id if isinstance(event_id, str) else None, _prefix(item, i)
            )
        else:
            good.append(item)
            good_idx.append(i)
    if good:
        ingestor: Ingestor = current_app.extensions["runledger.ingestor"]
        for res in ingestor.ingest(good, indexes=good_idx):
            if res.status == "rejected":
                res.errors = _prefix(res.errors, res.index)
            results[res.index] = res
    ordered = [results[i] for i in range(len(raw))]
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for res in ordered:
        counts[res.status] += 1
    current_app.extensions["runledger.ingest_counts"](counts)
    payload = {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": ordered,
    }
    return Response(orjson.dumps(payload), status=200, mimetype="application/json")


def _prefix(errors: list[EventError], index: int) -> list[EventError]:
    return [EventError(field=f"events[{index}].{e.field}", message=e.message) for e in errors]
