"""OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip).

GenAI spans become model calls in the ledger, through the same ingest as ``/v1/events``;
every accepted span is stored in ``trace_spans``. The mapping is in ``_otlp_mapping`` and
docs/otlp.md. Answers follow the OTLP specification: ``ExportTraceServiceResponse`` in the
request's encoding, with ``partial_success`` counting the spans refused and why.
"""

from __future__ import annotations

import base64
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import Counter as PromCounter

from runledger.control._auth import current_principal, require
from runledger.control._errors import ApiError
from runledger.control._otlp_mapping import (
    AttributeRedactor,
    MappedBatch,
    map_request,
    validate_events,
)
from runledger.cost.pricing import PricingTable, default_pricing
from runledger.events import validate_batch
from runledger.redact import default_redactor
from runledger.store import Ingestor
from runledger.store.spans import forget_spans, known_tenants, store_spans
from runledger.store.tokens import Principal

__all__ = ["DEFAULT_MAX_BYTES", "JSON", "PROTOBUF", "OtlpMetrics", "bp", "init_app"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
"""Largest export accepted, in bytes after gzip decompression (``OTLP_MAX_BYTES``)."""
_MAX_MESSAGES = 5

bp = Blueprint("otlp", __name__, url_prefix="/v1")


class OtlpMetrics:
    """Counters of the OTLP receiver, on the control service's registry."""

    def __init__(self, registry: Any) -> None:
        self.spans = PromCounter(
            "runledger_control_otlp_spans",
            "Spans received on POST /v1/traces, by result: model_call (counted as a model"
            " call), ignored (stored, not a cost), duplicate or rejected, in spans.",
            ["status"],
            registry=registry,
        )
        self.unpriced = PromCounter(
            "runledger_control_otlp_unpriced_spans",
            "GenAI spans received on POST /v1/traces whose model has no price (stored with"
            " cost 0 and flagged unpriced), by tenant and model, in spans.",
            ["tenant", "model"],
            registry=registry,
        )
        for status in ("model_call", "ignored", "duplicate", "rejected"):
            self.spans.labels(status)


def init_app(app: Flask) -> None:
    """Give the app the receiver's pricing table and metrics, and register the route."""
    app.config.setdefault("OTLP_MAX_BYTES", DEFAULT_MAX_BYTES)
    pricing = app.config.get("PRICING")
    app.extensions["runledger.pricing"] = pricing if pricing is not None else default_pricing()
    app.extensions["runledger.otlp_redactor"] = AttributeRedactor(default_redactor())
    app.extensions["runledger.otlp_pool"] = ThreadPoolExecutor(
        max_workers=4, thread_name_prefix="runledger-otlp-spans"
    )
    app.extensions["runledger.otlp_metrics"] = OtlpMetrics(
        app.extensions["runledger.metrics"].registry
    )
    app.register_blueprint(bp)


def _protobuf_request() -> bool:
    return request.mimetype == PROTOBUF


@bp.errorhandler(ApiError)
def _otlp_error(exc: ApiError) -> Response:
    """Answer an error as OTLP wants it: a ``google.rpc.Status`` for a protobuf request."""
    if _protobuf_request():
        status = status_pb2.Status(code=_grpc_code(exc.status), message=exc.message)
        return Response(status.SerializeToString(), status=exc.status, mimetype=PROTOBUF)
    return Response(orjson.dumps(exc.body()), status=exc.status, mimetype=JSON)


def _grpc_code(http: int) -> int:
    # google.rpc.Code: INVALID_ARGUMENT 3, UNAUTHENTICATED 16, PERMISSION_DENIED 7,
    # RESOURCE_EXHAUSTED 8, UNIMPLEMENTED 12.
    return {400: 3, 401: 16, 403: 7, 413: 8, 415: 12}.get(http, 2)


def _body() -> bytes:
    limit = int(current_app.config["OTLP_MAX_BYTES"])
    too_large = (
        f"export too large: the limit is {limit} bytes (after decompression); send smaller batches"
    )
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, too_large)
    data = request.get_data(cache=False)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflate.decompress(data, limit + 1)
        except zlib.error as exc:
            raise ApiError(400, f"body is not valid gzip (Content-Encoding: gzip): {exc}") from None
        if len(data) > limit:
            raise ApiError(413, too_large)
        if not inflate.eof:
            raise ApiError(400, "body is not valid gzip (Content-Encoding: gzip): truncated")
    elif encoding not in ("", "identity"):
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}: send gzip or none")
    if len(data) > limit:
        raise ApiError(413, too_large)
    return data


_ID_FIELDS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8,
              "parentSpanId": 8, "parent_span_id": 8}  # fmt: skip


def _hex_ids_to_base64(obj: dict[str, Any], path: str) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping reads bytes as base64."""
    for key, size in _ID_FIELDS.items():
        value = obj.get(key)
        if value is None or value == "":
            continue
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != size:
            raise ApiError(400, f"{path}.{key} must be {size * 2} hex digits, got {value!r}")
        obj[key] = base64.b64encode(raw).decode()


def _parse_json(data: bytes) -> ExportTraceServiceRequest:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "body must be an OTLP/JSON ExportTraceServiceRequest object")
    resource_spans = doc.get("resourceSpans", doc.get("resource_spans", []))
    for i, rs in enumerate(resource_spans if isinstance(resource_spans, list) else []):
        scopes = rs.get("scopeSpans", rs.get("scope_spans", [])) if isinstance(rs, dict) else []
        for j, ss in enumerate(scopes if isinstance(scopes, list) else []):
            spans = ss.get("spans", []) if isinstance(ss, dict) else []
            for k, span in enumerate(spans if isinstance(spans, list) else []):
                if not isinstance(span, dict):
                    continue
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                _hex_ids_to_base64(span, where)
                for n, link in enumerate(span.get("links") or []):
                    if isinstance(link, dict):
                        _hex_ids_to_base64(link, f"{where}.links[{n}]")
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ApiError(
            400, f"body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}"
        ) from None


def read_export() -> ExportTraceServiceRequest:
    """Decode the request's ``ExportTraceServiceRequest``; refuse anything else with a 4xx."""
    if request.mimetype not in (PROTOBUF, JSON):
        raise ApiError(
            415,
            f"send OTLP as {PROTOBUF} or {JSON}; Content-Type was {request.mimetype or '(none)'!r}",
        )
    data = _body()
    if request.mimetype == PROTOBUF:
        try:
            req = ExportTraceServiceRequest.FromString(data)
        except (DecodeError, RuntimeWarning) as exc:
            raise ApiError(
                400, f"body is not a valid OTLP protobuf ExportTraceServiceRequest: {exc}"
            ) from None
    else:
        req = _parse_json(data)
    for i, rs in enumerate(req.resource_spans):
        if not rs.HasField("resource"):
            raise ApiError(
                400,
                f"resourceSpans[{i}].resource is missing: every batch of spans needs its"
                " resource (service.name and the runledger.* attributes); nothing was stored",
            )
    return req


def _answer(rejected: int, messages: list[str]) -> Response:
    resp = ExportTraceServiceResponse()
    if rejected or messages:
        resp.partial_success.rejected_spans = rejected
        shown = messages[:_MAX_MESSAGES]
        more = len(messages) - len(shown)
        resp.partial_success.error_message = "; ".join(shown) + (
            f"; and {more} more" if more > 0 else ""
        )
    if _protobuf_request():
        return Response(resp.SerializeToString(), mimetype=PROTOBUF)
    return Response(json_format.MessageToJson(resp, indent=None), mimetype=JSON)


@bp.post("/traces")
@require("agent", "admin")
def post_traces() -> Response:
    """Receive an OTLP trace export; store its spans and the model calls they report."""
    req = read_export()
    app = current_app
    pricing: PricingTable = app.extensions["runledger.pricing"]
    metrics: OtlpMetrics = app.extensions["runledger.otlp_metrics"]
    ingestor: Ingestor = app.extensions["runledger.ingestor"]
    db = app.extensions["runledger.db"]
    principal = current_principal()
    mapped = map_request(
        req, principal, pricing, default_redactor(),
        app.extensions["runledger.otlp_redactor"], limits=ingestor.limits,
    )  # fmt: skip
    # Spans and events go to PostgreSQL at once, on two connections: the request waits for
    # the slower, not the sum. The spans go first, while the events are validated; the
    # insert itself skips tenants that do not exist. A span refused afterwards (rare: an
    # invalid event, or one the ingest refuses) is deleted again if this request stored it.
    stored = app.extensions["runledger.otlp_pool"].submit(store_spans, db, mapped.spans)
    try:
        refused, kept, body = _validate(mapped)
        _refuse_unknown_tenants(db, mapped, refused, principal)
        kept = [(m, i) for m, i in kept if i not in refused]
        late, duplicates = _store_events(ingestor, mapped, kept, body)
    finally:
        inserted = stored.result()
    refused.update((i, why) for i, why in late.items() if i not in refused)
    if refused:
        keys = [(mapped.spans[i].trace_id, mapped.spans[i].span_id) for i in refused]
        forget_spans(db, [k for k in keys if k in inserted])
    messages = list(mapped.rejected) + [refused[i] for i in sorted(refused)]
    rejected = len(mapped.rejected) + len(refused)
    if mapped.unpriced:
        for (tenant, model), n in mapped.unpriced.items():
            metrics.unpriced.labels(tenant, model).inc(n)
        models = ", ".join(sorted({m for _, m in mapped.unpriced}))
        messages.append(
            f"warning: {sum(mapped.unpriced.values())} span(s) name models without a price "
            f"({models}); stored with cost 0 and flagged unpriced: add them to the pricing table"
        )
    outcome: Counter[str] = Counter(rejected=rejected)
    for i, is_call in enumerate(mapped.model_call_spans):
        if i in refused:
            continue
        if i in duplicates:
            outcome["duplicate"] += 1
        else:
            outcome["model_call" if is_call else "ignored"] += 1
    for status, n in outcome.items():
        if n:
            metrics.spans.labels(status).inc(n)
    return _answer(rejected, messages)


def _refuse_unknown_tenants(
    db: Any, mapped: MappedBatch, refused: dict[int, str], principal: Principal
) -> None:
    """Refuse the spans of tenants that do not exist (an admin token may name any).

    An agent token's spans all name its own tenant, which existed when the token was
    checked (a token is deleted with its tenant): no query. A tenant deleted since is
    still refused, by the ingest and the span insert, which both check tenants again.
    """
    named = {s.tenant_id for s in mapped.spans}
    if principal.role == "agent" and named <= {principal.tenant_id}:
        return
    unknown = named - known_tenants(db, named)
    for i, span in enumerate(mapped.spans):
        if span.tenant_id in unknown:
            refused.setdefault(i, _why(mapped, i, f"unknown tenant {span.tenant_id!r}"))


def _validate(mapped: MappedBatch) -> tuple[dict[int, str], list[tuple[Any, int]], bytes | None]:
    """Validate the batch's events.

    Returns why each span with an invalid event is refused, the valid (event, span index)
    pairs of the other spans, and the JSON body PostgreSQL may read as is (or None).
    """
    refused: dict[int, str] = {}
    if not mapped.events:
        return refused, [], None
    # The common case: every event valid. Spans alike but for their ids, times, tokens and
    # cost share one validation (validate_events); the same JSON goes to PostgreSQL, as on
    # POST /v1/events.
    body = orjson.dumps({"events": mapped.events})
    fast = validate_events(mapped.events)
    if fast is not None:
        models, as_sent = fast
        pairs = list(zip(models, mapped.event_span, strict=True))
        return refused, pairs, body if as_sent else None
    good: list[tuple[Any, int]] = []
    validated = validate_batch(mapped.events)
    for item, span_index, event in zip(validated, mapped.event_span, mapped.events, strict=True):
        if isinstance(item, list):
            problems = ", ".join(f"{e.field}: {e.message}" for e in item)
            refused.setdefault(span_index, _why(mapped, span_index, f"{event['type']} {problems}"))
        else:
            good.append((item, span_index))
    return refused, [(m, s) for m, s in good if s not in refused], None


def _store_events(
    ingestor: Ingestor, mapped: MappedBatch, kept: list[tuple[Any, int]], body: bytes | None
) -> tuple[dict[int, str], set[int]]:
    """Ingest ``kept`` (event model, span index) pairs.

    Returns why each span the ledger refused was refused, and the spans all of whose events
    were already stored (a re-sent export).
    """
    refused: dict[int, str] = {}
    if not kept:
        return refused, set()
    results = ingestor.ingest([m for m, _ in kept], body=body)
    statuses: Counter[str] = Counter()
    fresh: set[int] = set()
    for res, (_, span_index) in zip(results, kept, strict=True):
        statuses[res.status] += 1
        if res.status == "rejected":
            problems = ", ".join(f"{e.field}: {e.message}" for e in res.errors)
            refused.setdefault(span_index, _why(mapped, span_index, problems))
        elif res.status == "accepted":
            fresh.add(span_index)
    current_app.extensions["runledger.ingest_counts"](
        {s: statuses[s] for s in ("accepted", "duplicate", "rejected")}
    )
    duplicates = {s for _, s in kept} - fresh - set(refused)
    return refused, duplicates


def _why(mapped: MappedBatch, index: int, problem: str) -> str:
    span = mapped.spans[index]
    return f"span {span.span_id} ({span.name!r}) refused: {problem}"
