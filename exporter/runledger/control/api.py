"""Ingest API: ``POST /v1/events``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from runledger.control._auth import current_principal, require
from runledger.control._batch import batch_counts, batch_response, read_batch
from runledger.events import MAX_BATCH_EVENTS, ParsedBatch, parse_batch_json, validate_batch
from runledger.store import EventResult, Ingestor
from runledger.validation import FieldError

__all__ = ["bp"]

bp = Blueprint("api", __name__, url_prefix="/v1")


@bp.post("/events")
@require("agent", "admin")
def post_events() -> Response:
    """Store a batch of events; answer one result per event, in order."""
    ingestor: Ingestor = current_app.extensions["runledger.ingestor"]
    parsed = _valid_batch()
    if parsed is not None:
        # Every event passed validation (the common case): one result per event, in order.
        # The body goes to PostgreSQL as sent unless redaction changed a text of it.
        body = request.get_data(cache=True) if parsed.as_sent else None
        ordered = _located(ingestor.ingest(parsed.events, body=body))
    else:
        raw = read_batch("events", MAX_BATCH_EVENTS)
        ordered = _ingest_mixed(ingestor, raw, validate_batch(raw))
    counts = batch_counts(res.status for res in ordered)
    current_app.extensions["runledger.ingest_counts"](counts)
    return batch_response(ordered, counts)


def _ingest_mixed(ingestor: Ingestor, raw: list[Any], validated: list[Any]) -> list[EventResult]:
    """Store the valid events of a batch that has invalid ones; answer every event in order."""
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
        results.update(
            (res.index, res) for res in _located(ingestor.ingest(good, indexes=good_idx))
        )
    return [results[i] for i in range(len(validated))]


def _valid_batch() -> ParsedBatch | None:
    """Return the events of a request whose every event is valid (the common case), or None.

    Parsing and validation happen in one pass in pydantic-core; anything unusual (not JSON,
    a bad event, a foreign tenant) returns None and ``read_batch``/``validate_batch`` answer
    it with their precise messages.
    """
    if request.mimetype != "application/json":
        return None
    parsed = parse_batch_json(request.get_data(cache=True))
    if parsed is None:
        return None
    principal = current_principal()
    if not all(principal.can_write_tenant(t) for t in {ev.tenant_id for ev in parsed.events}):
        return None
    return parsed


def _located(results: list[EventResult]) -> list[EventResult]:
    """Name each rejected event's fields by its place in the request (``events[i].field``)."""
    for res in results:
        if res.status == "rejected":
            res.errors = _prefix(res.errors, res.index)
    return results


def _prefix(errors: list[FieldError], index: int) -> list[FieldError]:
    return [FieldError(f"events[{index}].{e.field}", e.message) for e in errors]
