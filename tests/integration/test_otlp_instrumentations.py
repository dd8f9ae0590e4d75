"""Real GenAI instrumentations, real clients, real OTLP exporter, real control service.

The official ``opentelemetry-instrumentation-openai-v2`` and OpenLLMetry's
``opentelemetry-instrumentation-anthropic`` trace the real ``openai`` and ``anthropic``
clients calling a fake provider on loopback; the OTLP/HTTP exporter sends the spans to the
control service (gunicorn). The ledger, the caps and the exporter's counters must hold
exactly the calls, tokens and cost the pricing table gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from _support.fake_llm import FakeLLM
from runledger.cost.pricing import default_pricing
from runledger.exporter import EventTailer, ExporterConfig
from runledger.store import Database

Sql = Callable[..., list[tuple[Any, ...]]]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


def _provider(
    url: str, token: str, resource: dict[str, Any]
) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider exporting to the control service (and keeping a copy in memory)."""
    provider = TracerProvider(resource=Resource.create(resource))
    exporter = OTLPSpanExporter(
        endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, memory


def _post(url: str, token: str, spans: list[ReadableSpan]) -> ExportTraceServiceResponse:
    body = encode_spans(spans).SerializeToString()
    resp = requests.post(
        f"{url}/v1/traces", data=body, timeout=10,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"},
    )  # fmt: skip
    assert resp.status_code == 200, resp.content
    return ExportTraceServiceResponse.FromString(resp.content)


def _exporter_counters(db: Database) -> CollectorRegistry:
    registry = CollectorRegistry()
    EventTailer(db, config=ExporterConfig(start_at="beginning"), registry=registry).poll()
    return registry


def test_openai_v2_instrumentation_reports_calls_tokens_and_cost(
    control_server: str, agent: dict[str, str], fake_llm: FakeLLM, sql: Sql, db: Database,
    make_tenant: Callable[..., str],
) -> None:  # fmt: skip
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    resource = {"service.name": "ts-agent", "runledger.project": "site-1",
                "runledger.phase": "build", "runledger.role": "implementer"}  # fmt: skip
    provider, memory = _provider(control_server, agent["token"], resource)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test-not-a-key")
        tracer = provider.get_tracer("agent")
        with tracer.start_as_current_span("draft landing page"):
            for _ in range(2):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "write"}]
                )
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    spans = memory.get_finished_spans()
    assert len(spans) == 3
    trace_id = format(spans[0].context.trace_id, "032x")
    one = default_pricing().cost("gpt-4o-mini", tokens_in=1200, tokens_out=300)
    calls = sql(
        "SELECT tenant_id, project_id, run_id, phase, role, model, tokens_in, tokens_out,"
        " cost_usd, payload->>'provider', payload->>'response_model' FROM events"
        " WHERE type = 'model_call'"
    )
    assert calls == [
        ("acme", "site-1", f"otel-{trace_id}", "build", "implementer", "gpt-4o-mini",
         1200, 300, one, "openai", "gpt-4o-mini-2024-07-18")
    ] * 2  # fmt: skip
    # The root span is the run: started and finished at its start and end.
    run = sql(
        "SELECT status, tokens_in, tokens_out, cost_usd, started_at IS NOT NULL,"
        " finished_at >= started_at FROM runs"
    )
    assert run == [("succeeded", 2400, 600, 2 * one, True, True)]
    spent = sql("SELECT spent_usd FROM caps WHERE tenant_id = 'acme'")
    assert spent == [(2 * one,)]
    stored = sql("SELECT name, kind, service, unpriced FROM trace_spans ORDER BY started_at")
    assert stored == [
        ("draft landing page", "internal", "ts-agent", False),
        ("chat gpt-4o-mini", "client", "ts-agent", False),
        ("chat gpt-4o-mini", "client", "ts-agent", False),
    ]

    labels = {"tenant": "acme", "model": "gpt-4o-mini", "phase": "build", "role": "implementer"}
    registry = _exporter_counters(db)
    assert registry.get_sample_value("runledger_cost_usd_total", labels) == float(2 * one)
    assert registry.get_sample_value("runledger_input_tokens_total", labels) == 2400
    assert registry.get_sample_value("runledger_output_tokens_total", labels) == 600

    # A retried export (the same spans again) counts once.
    again = _post(control_server, agent["token"], list(spans))
    assert again.partial_success.rejected_spans == 0
    assert sql("SELECT count(*), sum(cost_usd) FROM events WHERE type = 'model_call'") == [
        (2, 2 * one)
    ]
    assert sql("SELECT spent_usd FROM caps WHERE tenant_id = 'acme'") == [(2 * one,)]
    assert sql("SELECT count(*) FROM trace_spans") == [(3,)]
    assert _exporter_counters(db).get_sample_value("runledger_cost_usd_total", labels) == float(
        2 * one
    )

    # A span naming another tenant than the token's is refused in partial_success.
    make_tenant("globex")
    other, memory2 = _provider(
        "http://127.0.0.1:9", "unused", {"service.name": "x", "runledger.tenant": "globex"}
    )
    other.get_tracer("agent").start_span("elsewhere").end()
    refused = _post(control_server, agent["token"], list(memory2.get_finished_spans()))
    other.shutdown()
    assert refused.partial_success.rejected_spans == 1
    assert "is for tenant 'globex'; this token may write only 'acme'" in (
        refused.partial_success.error_message
    )
    assert sql("SELECT count(*) FROM trace_spans WHERE tenant_id = 'globex'") == [(0,)]


def test_openllmetry_anthropic_instrumentation_reports_cache_reads_and_writes(
    control_server: str, agent: dict[str, str], fake_llm: FakeLLM, sql: Sql
) -> None:
    import anthropic
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    resource = {"service.name": "publisher"}
    provider, memory = _provider(control_server, agent["token"], resource)
    # The Coordinator's context arrives as W3C baggage; the baggage span processor copies it
    # onto every span of the agent (docs/otlp.md).
    provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    ctx = None
    for key, value in {
        "runledger.run": "run-42",
        "runledger.project": "site-9",
        "runledger.phase": "publish",
        "runledger.role": "publisher",
    }.items():
        ctx = baggage.set_baggage(key, value, context=ctx)  # fmt: skip
    token = context.attach(ctx)  # type: ignore[arg-type]
    try:
        client = anthropic.Anthropic(base_url=fake_llm.url, api_key="sk-ant-test-not-a-key")
        with provider.get_tracer("agent").start_as_current_span("publish"):
            client.messages.create(
                model="claude-sonnet-4", max_tokens=100,
                messages=[{"role": "user", "content": "my key is sk-ant-api03-abcdefghijklmnop"}],
            )  # fmt: skip
    finally:
        context.detach(token)
        instrumentor.uninstrument()
        provider.shutdown()

    assert len(memory.get_finished_spans()) == 2
    # Cache reads and writes are inside input_tokens (1800 = 500 + 1000 + 300): each part at
    # its own price.
    expected = default_pricing().cost(
        "claude-sonnet-4", tokens_in=1800, tokens_out=100,
        cached_tokens_in=1000, cache_write_tokens_in=300,
    )  # fmt: skip
    assert expected == Decimal("0.004425")
    rows = sql(
        "SELECT run_id, role, model, tokens_in, tokens_out, cost_usd,"
        " (payload->>'cached_tokens_in')::int, (payload->>'cache_write_tokens_in')::int"
        " FROM events WHERE type = 'model_call'"
    )
    assert rows == [("run-42", "publisher", "claude-sonnet-4", 1800, 100, expected, 1000, 300)]
    # A run named by the agent is the agent's: no run_started/run_finished are made up.
    assert sql("SELECT type FROM events ORDER BY type") == [("model_call",)]
    # Prompt content never reaches the span store.
    attrs = sql("SELECT attributes::text FROM trace_spans")
    assert attrs and not any("sk-ant-api03" in a or "gen_ai.input.messages" in a for (a,) in attrs)
