"""OTLP in: GenAI spans/s through POST /v1/traces against events/s through POST /v1/events.

The same model calls go both ways, in the same run, to the same real control service
(gunicorn) and PostgreSQL: as OTLP/protobuf exports of 512 GenAI spans each (what the
official OpenAI instrumentation emits, context as resource attributes), and as
``{"events": [...]}`` batches of 512 ``model_call`` events carrying the same tokens, model
and cost. The span path also prices each call and stores every span in ``trace_spans``.
Rounds alternate which path goes first; ``ratio`` is the median of the rounds' ratios. Writes
bench/results/otlp_in.json with ``ratio`` = spans/s / events/s (target >= 0.5).
"""

from __future__ import annotations

import http.client
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import control_service, fresh_database, postgres, write_result

from runledger.control._otlp_mapping import event_id
from runledger.cost.pricing import default_pricing
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

BATCH = 512
BATCHES_PER_ROUND = int(os.environ.get("OTLP_BENCH_BATCHES", "8"))
ROUNDS = int(os.environ.get("OTLP_BENCH_ROUNDS", "4"))
TARGET = 0.5
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash"]
TENANT = "bench"
JSON, PROTOBUF = "application/json", "application/x-protobuf"


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _calls(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Model calls: ids, model, tokens and times (10 calls per run)."""
    now = datetime.now(UTC) - timedelta(minutes=30)
    calls = []
    for i in range(n):
        start = now + timedelta(milliseconds=i)
        calls.append({
            "trace": rng.randbytes(16), "span": rng.randbytes(8),
            "run": f"run-{uuid.uuid4().hex[:12]}" if i % 10 == 0 else calls[-1]["run"],
            "model": rng.choice(MODELS), "tokens_in": rng.randint(200, 8000),
            "tokens_out": rng.randint(50, 1500), "start": start,
            "end": start + timedelta(milliseconds=rng.randint(300, 4000)),
        })  # fmt: skip
    return calls


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def otlp_body(calls: list[dict[str, Any]]) -> bytes:
    resource = Resource(attributes=[
        _kv("service.name", "agent"), _kv("runledger.project", "proj-1"),
        _kv("runledger.phase", "build"), _kv("runledger.role", "implementer"),
    ])  # fmt: skip
    spans = [
        Span(
            trace_id=c["trace"], span_id=c["span"], name=f"chat {c['model']}",
            kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=_ns(c["start"]),
            end_time_unix_nano=_ns(c["end"]),
            attributes=[
                _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "openai"),
                _kv("gen_ai.request.model", c["model"]), _kv("gen_ai.response.model", c["model"]),
                _kv("gen_ai.response.id", "chatcmpl-" + c["span"].hex()),
                _kv("gen_ai.usage.input_tokens", c["tokens_in"]),
                _kv("gen_ai.usage.output_tokens", c["tokens_out"]),
                _kv("runledger.run", c["run"]), _kv("server.address", "api.example.invalid"),
            ],
        )
        for c in calls
    ]  # fmt: skip
    req = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()


def events_body(calls: list[dict[str, Any]]) -> bytes:
    pricing = default_pricing()
    events = []
    for c in calls:
        trace, span = c["trace"].hex(), c["span"].hex()
        events.append({
            "event_id": str(event_id(trace, span, "model_call")), "type": "model_call",
            "tenant_id": TENANT, "project_id": "proj-1", "run_id": c["run"],
            "phase": "build", "role": "implementer", "occurred_at": c["end"].isoformat(),
            "tokens_in": c["tokens_in"], "tokens_out": c["tokens_out"], "model": c["model"],
            "cost_usd": str(pricing.cost(c["model"], tokens_in=c["tokens_in"],
                                         tokens_out=c["tokens_out"])),
            "trace_id": trace, "span_id": span,
            "payload": {"source": "otlp", "operation": "chat", "provider": "openai",
                        "request_model": c["model"], "response_model": c["model"],
                        "duration_ms": (c["end"] - c["start"]).total_seconds() * 1000},
        })  # fmt: skip
    return orjson.dumps({"events": events})


def _send(base: str, path: str, bodies: list[bytes], token: str, ctype: str) -> float:
    """Post every body on one connection; return the seconds taken."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
    started = time.perf_counter()
    for body in bodies:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {data[:300]!r}")
        if path == "/v1/traces":
            partial = ExportTraceServiceResponse.FromString(data).partial_success
            if partial.rejected_spans:
                raise RuntimeError(f"spans rejected: {partial.error_message}")
        elif orjson.loads(data)["accepted"] != BATCH:
            raise RuntimeError(f"events not all accepted: {data[:300]!r}")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def main() -> int:
    rng = random.Random(13)
    with postgres() as server:
        url = fresh_database(server, "otlp_bench")
        with psycopg.connect(url, autocommit=True) as conn:
            create_tenant(conn, TENANT, daily_cap_usd=10**9)
            token = create_token(conn, role="agent", label="bench", tenant_id=TENANT)
        with control_service(url) as base:
            warm = _calls(rng, BATCH)
            _send(base, "/v1/events", [events_body(warm)], token, "application/json")
            _send(base, "/v1/traces", [otlp_body(_calls(rng, BATCH))], token,
                  "application/x-protobuf")  # fmt: skip
            spans_rates, events_rates = [], []
            for _ in range(ROUNDS):
                n = BATCH * BATCHES_PER_ROUND
                # The same calls both ways, under different ids so neither is a duplicate.
                calls = _calls(rng, n)
                twins = [{**c, "trace": rng.randbytes(16), "span": rng.randbytes(8)} for c in calls]
                ev = [events_body(calls[i : i + BATCH]) for i in range(0, n, BATCH)]
                tr = [otlp_body(twins[i : i + BATCH]) for i in range(0, n, BATCH)]
                # Alternate which path goes first, so neither always meets a warmer server.
                first_events = len(spans_rates) % 2 == 0
                if first_events:
                    events_rates.append(n / _send(base, "/v1/events", ev, token, JSON))
                spans_rates.append(n / _send(base, "/v1/traces", tr, token, PROTOBUF))
                if not first_events:
                    events_rates.append(n / _send(base, "/v1/events", ev, token, JSON))
        with psycopg.connect(url) as conn:
            spans_stored = conn.execute("SELECT count(*) FROM trace_spans").fetchone()[0]
            calls_stored = conn.execute(
                "SELECT count(*) FROM events WHERE type = 'model_call'"
            ).fetchone()[0]
    spans_s, events_s = statistics.median(spans_rates), statistics.median(events_rates)
    # Each round's two paths ran back to back under the same load: the median of the rounds'
    # ratios, as bench/ingest.py does.
    ratio = statistics.median(sp / ev for sp, ev in zip(spans_rates, events_rates, strict=True))
    figures = {
        "spans_per_s": round(spans_s, 1),
        "events_per_s": round(events_s, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET,
        "batch": BATCH,
        "calls_per_round": BATCH * BATCHES_PER_ROUND,
        "rounds": ROUNDS,
        "spans_stored": spans_stored,
        "model_calls_stored": calls_stored,
        "spans_per_s_rounds": [round(r, 1) for r in spans_rates],
        "events_per_s_rounds": [round(r, 1) for r in events_rates],
    }
    path = write_result("otlp_in", figures)
    print(f"otlp_in: {spans_s:.0f} spans/s vs {events_s:.0f} events/s, ratio {ratio:.3f}"
          f" (target >= {TARGET}) -> {path}")  # fmt: skip
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
