"""POST /v1/traces: encodings, gzip, bad input, and the GenAI mapping (docs/otlp.md)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from runledger.control import create_app
from runledger.control._otlp_mapping import MappedBatch, event_id, map_request, validate_events
from runledger.cost.pricing import default_pricing
from runledger.events import parse_batch_json
from runledger.redact import default_redactor
from runledger.store import Database
from runledger.store.tokens import Principal

Sql = Callable[..., list[tuple[Any, ...]]]
PB = "application/x-protobuf"
TRACE = "5b8efff798038103d269b633813fc60c"
ROOT_SPAN = "eee19b7ec3c1b174"
CALL_SPAN = "eee19b7ec3c1b173"


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # int64 as a string, per spec
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _span(span_id: str, name: str, attrs: dict[str, Any], parent: str = "", **kw: Any) -> dict:
    now = time.time_ns()
    return {
        "traceId": kw.get("trace", TRACE), "spanId": span_id, "parentSpanId": parent,
        "name": name, "kind": kw.get("kind", 3),
        "startTimeUnixNano": str(now - 2_000_000_000), "endTimeUnixNano": str(now - 1_000_000_000),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        "status": {"code": kw.get("status", 0), "message": kw.get("message", "")},
    }  # fmt: skip


def _export(spans: list[dict], resource: dict[str, Any] | None = None) -> dict[str, Any]:
    res = {"service.name": "ts-agent"} if resource is None else resource
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr(k, v) for k, v in res.items()]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4.1",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
    "gen_ai.usage.cache_read.input_tokens": 400,
}


INVOKE = "gen_ai.operation.name"


def _pb(doc: dict[str, Any]) -> bytes:
    """The protobuf form of an OTLP/JSON document (via the receiver's own JSON reading)."""
    from runledger.control.otlp import _parse_json

    return _parse_json(json.dumps(doc).encode()).SerializeToString()


def _post(client: Any, token: str, body: bytes, ctype: str = PB, **headers: str) -> Any:
    return client.post(
        "/v1/traces", data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype, **headers},
    )  # fmt: skip


def test_json_export_with_hex_ids_and_string_int64_becomes_a_priced_model_call(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    spans = [
        _span(ROOT_SPAN, "agent turn", {"runledger.phase": "draft"}, kind=1),
        _span(CALL_SPAN, "chat gpt-4.1", {**CHAT, "runledger.phase": "draft"}, parent=ROOT_SPAN),
    ]
    resp = _post(client, agent["token"], json.dumps(_export(spans)).encode(), "application/json")
    assert resp.status_code == 200, resp.json
    assert resp.mimetype == "application/json"
    assert resp.json == {}  # no partial_success: everything accepted
    cost = default_pricing().cost("gpt-4.1", tokens_in=1000, tokens_out=200, cached_tokens_in=400)
    rows = sql(
        "SELECT event_id::text, type, project_id, run_id, phase, role, tokens_in, cost_usd,"
        " trace_id, span_id FROM events ORDER BY type"
    )
    run = f"otel-{TRACE}"
    assert rows == [
        (str(event_id(TRACE, CALL_SPAN, "model_call")), "model_call", "otel-ts-agent", run,
         "draft", "agent", 1000, cost, TRACE, CALL_SPAN),
        (str(event_id(TRACE, ROOT_SPAN, "run_finished")), "run_finished", "otel-ts-agent", run,
         "draft", "agent", 0, 0, TRACE, ROOT_SPAN),
        (str(event_id(TRACE, ROOT_SPAN, "run_started")), "run_started", "otel-ts-agent", run,
         "draft", "agent", 0, 0, TRACE, ROOT_SPAN),
    ]  # fmt: skip
    assert sql("SELECT parent_span_id, kind FROM trace_spans ORDER BY span_id") == [
        (ROOT_SPAN, "client"),
        (None, "internal"),
    ]


def test_gzip_protobuf_export_is_accepted_and_a_resend_counts_once(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    body = gzip.compress(_pb(_export([_span(CALL_SPAN, "chat", CHAT, parent=ROOT_SPAN)])))
    for _ in range(2):
        resp = _post(client, agent["token"], body, **{"Content-Encoding": "gzip"})
        assert resp.status_code == 200
        assert resp.mimetype == PB
        assert not ExportTraceServiceResponse.FromString(resp.data).HasField("partial_success")
    assert sql("SELECT count(*), sum(tokens_in) FROM events") == [(1, 1000)]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'runledger_control_otlp_spans_total{status="model_call"} 1.0' in metrics
    assert 'runledger_control_otlp_spans_total{status="duplicate"} 1.0' in metrics


def test_unknown_model_is_stored_flagged_and_counted_never_silently_free(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    attrs = {**CHAT, "gen_ai.request.model": "my-finetune-7b"}
    resp = _post(client, agent["token"], _pb(_export([_span(CALL_SPAN, "chat", attrs)])))
    answer = ExportTraceServiceResponse.FromString(resp.data)
    assert answer.partial_success.rejected_spans == 0
    assert (
        "warning: 1 span(s) name models without a price (my-finetune-7b); stored with cost 0 and"
        " flagged unpriced: add them to the pricing table"
    ) in answer.partial_success.error_message
    assert sql(
        "SELECT model, cost_usd, payload->>'unpriced' FROM events WHERE type='model_call'"
    ) == [("my-finetune-7b", 0, "true")]
    assert sql("SELECT unpriced FROM trace_spans WHERE span_id = %s", CALL_SPAN) == [(True,)]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert (
        'runledger_control_otlp_unpriced_spans_total{model="my-finetune-7b",tenant="acme"} 1.0'
        in metrics
    )


def test_spans_without_genai_usage_and_sdk_spans_are_stored_but_cost_nothing(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    named = {"runledger.run": "run-1", "runledger.project": "proj-1"}
    spans = [
        _span("0000000000000001", "GET /search", {**named, "http.request.method": "GET"}),
        _span(
            "0000000000000002",
            "invoke_agent",
            {**named, **CHAT, "gen_ai.operation.name": "invoke_agent"},
        ),
        # The runledger SDK's own model-call span: its usage reached the ledger on events.
        _span("0000000000000003", "chat gpt-4.1", {**named, **CHAT, "runledger.cost_usd": 0.1}),
    ]
    resp = _post(client, agent["token"], _pb(_export(spans)))
    assert resp.status_code == 200
    assert sql("SELECT count(*) FROM events") == [(0,)]
    assert sql("SELECT count(*) FROM trace_spans WHERE run_id = 'run-1'") == [(3,)]


def test_a_failed_root_span_fails_its_run_with_the_status_message(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    span = _span(ROOT_SPAN, "agent turn", {}, status=2, message="tool timed out")
    assert _post(client, agent["token"], _pb(_export([span]))).status_code == 200
    assert sql("SELECT status, error FROM runs") == [("failed", "tool timed out")]


def test_admin_token_needs_a_tenant_on_the_span(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme")
    admin = make_token("admin")
    spans = [
        _span(CALL_SPAN, "chat", CHAT),
        _span(ROOT_SPAN, "chat", {**CHAT, "runledger.tenant": "acme"}, parent=CALL_SPAN),
    ]
    answer = ExportTraceServiceResponse.FromString(_post(client, admin, _pb(_export(spans))).data)
    assert answer.partial_success.rejected_spans == 1
    assert (
        "names no tenant (set the runledger.tenant attribute) and the token is not bound to one"
        in answer.partial_success.error_message
    )
    assert sql("SELECT span_id FROM trace_spans") == [(ROOT_SPAN,)]


def test_spans_of_a_tenant_that_does_not_exist_are_refused(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme")
    spans = [
        _span(CALL_SPAN, "GET /", {"runledger.tenant": "nobody", "runledger.run": "r1"}),
        _span(ROOT_SPAN, "GET /", {"runledger.tenant": "acme", "runledger.run": "r1"}),
    ]
    resp = _post(client, make_token("admin"), _pb(_export(spans)))
    answer = ExportTraceServiceResponse.FromString(resp.data)
    assert answer.partial_success.rejected_spans == 1
    assert "unknown tenant 'nobody'" in answer.partial_success.error_message
    assert sql("SELECT tenant_id FROM trace_spans") == [("acme",)]


def test_a_span_with_an_invalid_run_id_is_refused_naming_it(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    span = _span(CALL_SPAN, "GET /", {"runledger.run": "run with spaces"})
    answer = ExportTraceServiceResponse.FromString(
        _post(client, agent["token"], _pb(_export([span]))).data
    )
    assert answer.partial_success.rejected_spans == 1
    assert "has an invalid runledger.run 'run with spaces'" in answer.partial_success.error_message
    assert sql("SELECT count(*) FROM trace_spans") == [(0,)]


def test_a_span_whose_event_is_invalid_is_refused_and_not_kept_beside_a_valid_one(
    client: Any, agent: dict[str, str], sql: Sql
) -> None:
    """Spans are inserted while their events are validated: a refused one is deleted again."""
    good = _span(CALL_SPAN, "chat", {**CHAT, "runledger.run": "run-ok"})
    bad = _span(
        ROOT_SPAN, "chat", {**CHAT, "runledger.run": "run-bad", "runledger.phase": "no way"}
    )
    answer = ExportTraceServiceResponse.FromString(
        _post(client, agent["token"], _pb(_export([good, bad]))).data
    )
    assert answer.partial_success.rejected_spans == 1
    assert f"span {ROOT_SPAN} ('chat') refused: model_call phase" in (
        answer.partial_success.error_message
    )
    assert sql("SELECT span_id FROM trace_spans") == [(CALL_SPAN,)]
    assert sql("SELECT run_id FROM events WHERE type = 'model_call'") == [("run-ok",)]


def test_owner_tokens_and_missing_tokens_are_refused(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    body = _pb(_export([_span(CALL_SPAN, "chat", CHAT)]))
    resp = _post(client, make_token("owner", "acme"), body)
    assert resp.status_code == 403
    status = status_pb2.Status.FromString(resp.data)  # OTLP: errors as google.rpc.Status
    assert status.message == "role 'owner' may not do this; allowed: agent, admin"
    resp = client.post("/v1/traces", data=body, headers={"Content-Type": PB})
    assert resp.status_code == 401


BAD = [
    (b"\xff\xff\xff", PB, {}, 400, "body is not a valid OTLP protobuf ExportTraceServiceRequest"),
    (b"{}", "text/plain", {}, 415,
     "send OTLP as application/x-protobuf or application/json; Content-Type was 'text/plain'"),
    (b'{"resourceSpans": [', "application/json", {}, 400, "body is not valid JSON"),
    (b'{"resourceSpans": [{"scopeSpans": []}]}', "application/json", {}, 400,
     "resourceSpans[0].resource is missing: every batch of spans needs its resource"),
    (json.dumps(_export([{"traceId": "xyz", "spanId": CALL_SPAN}])).encode(), "application/json",
     {}, 400, "resourceSpans[0].scopeSpans[0].spans[0].traceId must be 32 hex digits"),
    (b"not gzip", PB, {"Content-Encoding": "gzip"}, 400, "body is not valid gzip"),
    (b"x", PB, {"Content-Encoding": "br"}, 415, "unsupported Content-Encoding 'br'"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "ctype", "headers", "status", "message"), BAD)
def test_malformed_exports_get_a_clear_4xx_and_store_nothing(
    client: Any, agent: dict[str, str], sql: Sql,
    body: bytes, ctype: str, headers: dict[str, str], status: int, message: str,
) -> None:  # fmt: skip
    resp = _post(client, agent["token"], body, ctype, **headers)
    assert resp.status_code == status
    text = status_pb2.Status.FromString(resp.data).message if ctype == PB else resp.json["error"]
    assert message in text
    assert sql("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM trace_spans)") == [
        (0,)
    ]


def test_oversize_exports_are_refused_before_and_after_decompression(
    db: Database, agent: dict[str, str], sql: Sql
) -> None:
    client = create_app({"DATABASE": db, "TESTING": True, "OTLP_MAX_BYTES": 2000}).test_client()
    spans = [_span(f"{i + 1:016x}", "chat", CHAT) for i in range(40)]
    raw = _pb(_export(spans))
    assert len(raw) > 2000
    packed = gzip.compress(raw)
    assert len(packed) < 2000  # a small body that inflates past the limit
    for body, headers in ((raw, {}), (packed, {"Content-Encoding": "gzip"})):
        resp = _post(client, agent["token"], body, **headers)
        assert resp.status_code == 413
        assert status_pb2.Status.FromString(resp.data).message.startswith(
            "export too large: the limit is 2000 bytes (after decompression)"
        )
    assert sql("SELECT count(*) FROM trace_spans") == [(0,)]


def test_an_empty_export_is_fine(client: Any, agent: dict[str, str]) -> None:
    resp = _post(client, agent["token"], ExportTraceServiceRequest().SerializeToString())
    assert resp.status_code == 200


def _mapped(spans: list[dict], resource: dict[str, Any]) -> MappedBatch:
    req = ExportTraceServiceRequest.FromString(_pb(_export(spans, resource)))
    return map_request(req, Principal("t", "agent", "acme"), default_pricing(), default_redactor())


def test_validation_shared_by_alike_spans_gives_what_validating_each_gives() -> None:
    """Spans that share their context and model are validated once; the rest is checked."""
    spans = []
    for i in range(40):
        spans.append(_span(f"{i + 1:016x}", "chat", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": ["gpt-4o", "mystery"][i % 2],
            "gen_ai.provider.name": "openai api_key=sk-" + "x" * 24 if i % 5 == 0 else "openai",
            "gen_ai.usage.input_tokens": 100 + i, "gen_ai.usage.output_tokens": 7 * i,
            "gen_ai.usage.cache_read.input_tokens": i, "runledger.run": f"run-{i % 3}",
        }, parent="00000000000000aa", trace=f"{i + 1:032x}"))  # fmt: skip
    mapped = _mapped(spans, {"service.name": "agent", "runledger.phase": "Build"})
    assert len(mapped.events) == 40 and not mapped.rejected
    fast = validate_events(mapped.events)
    slow = parse_batch_json(orjson.dumps({"events": mapped.events}))
    assert fast is not None and slow is not None
    assert [m.model_dump() for m in fast[0]] == [m.model_dump() for m in slow.events]
    assert fast[1] is slow.as_sent is False  # the provider's key was redacted
    assert "sk-" not in str([m.payload.provider for m in fast[0]])
    # A value past the models' bounds on a copied event: no shortcut, the caller names it.
    bad = [dict(e) for e in mapped.events]
    bad[-1]["tokens_out"] = 2**31
    assert validate_events(bad) is None
    bad = [dict(e) for e in mapped.events]
    bad[-1]["run_id"] = "run 4"
    assert validate_events(bad) is None
