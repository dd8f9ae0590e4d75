"""Traces and logs of a run: GenAI attributes, parentage, trace/log correlation, sampling,
and no secret or PII in anything the SDK sends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from _support.corpus import FORBIDDEN, ORDINARY, SECRETS
from _support.redact_corpus import (
    BASE64_CREDENTIALS,
    CLOUD_SECRETS,
    NATIONAL_PHONES,
    NON_ASCII_EMAILS,
    URL_CREDENTIALS,
    WEBHOOKS,
)
from _support.sdk import OtlpReceiver, Telemetry
from runledger.sdk import CostOptions, Ledger, RateLimitingSampler, TelemetryOptions

UNCAPPED = CostOptions(enforce_tenant_cap=False)
"""Telemetry without a control service: no ledger to draw the tenant cap's leases from."""

Sql = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def info_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


def _attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind else None
    return out


def test_spans_and_logs_of_a_run_reach_an_otlp_receiver(
    make_ledger: Callable[..., Ledger], otlp_receiver: OtlpReceiver, info_logging: None
) -> None:
    ledger = make_ledger(
        None,
        telemetry=TelemetryOptions(),
        costs=UNCAPPED,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
            "OTEL_SERVICE_NAME": "implementer-agent",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        },
    )
    agent_log = logging.getLogger("agent.steps")
    agent_log.info("outside any run: not a run log")
    with ledger.run("acme", "proj-1", "build", "implementer", playbook="landing") as run:
        agent_log.info("planning step %d", 1)
        with run.model_call("gpt-4.1", provider="openai") as call:
            agent_log.info("asking the model")
            call.record(tokens_in=1200, tokens_out=300, cached_tokens_in=200,
                        response_model="gpt-4.1-2025-04-14", finish_reasons=["stop"])  # fmt: skip
        with run.external_call("maps.geocode", cost_usd=0.005):
            pass
    assert not ledger.flush(1)  # no RUNLEDGER_URL: events wait in the spool, telemetry is out
    assert ledger.pending() == 3

    spans = {span.name: (resource, span) for resource, span in otlp_receiver.spans()}
    assert set(spans) == {"invoke_agent implementer", "chat gpt-4.1", "external maps.geocode"}
    resource, root = spans["invoke_agent implementer"]
    res = _attrs(resource.attributes)
    assert res["service.name"] == "implementer-agent"
    assert res["deployment.environment"] == "test"
    _, chat = spans["chat gpt-4.1"]
    _, ext = spans["external maps.geocode"]
    # One trace per run; the calls are children of the run's span.
    assert root.trace_id.hex() == run.trace_id
    assert root.parent_span_id == b""
    assert chat.trace_id == root.trace_id and chat.parent_span_id == root.span_id
    assert ext.parent_span_id == root.span_id
    a = _attrs(chat.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4.1"
    assert a["gen_ai.response.model"] == "gpt-4.1-2025-04-14"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.output_tokens"] == 300
    assert a["gen_ai.usage.cache_read.input_tokens"] == 200
    assert a["runledger.cached"] is False
    assert a["runledger.cost_usd"] == pytest.approx(float(run.cost_usd) - 0.005)
    for key, value in {
        "runledger.tenant_id": "acme", "runledger.project_id": "proj-1",
        "runledger.phase": "build", "runledger.role": "implementer",
        "runledger.run_id": run.run_id, "runledger.playbook": "landing",
    }.items():  # fmt: skip
        assert a[key] == value
    assert _attrs(ext.attributes)["runledger.cost_usd"] == pytest.approx(0.005)

    logs = [(r, rec) for r, rec in otlp_receiver.log_records()]
    bodies = {rec.body.string_value: rec for _, rec in logs}
    assert "outside any run: not a run log" not in bodies
    step = bodies["planning step 1"]
    assert step.trace_id == root.trace_id and step.span_id == root.span_id
    asking = bodies["asking the model"]
    assert asking.span_id == chat.span_id  # logged inside the model call
    assert _attrs(asking.attributes)["runledger.run_id"] == run.run_id
    assert asking.severity_text == "INFO"
    summary = next(b for b in bodies if b.startswith("external call maps.geocode"))
    assert bodies[summary].span_id == ext.span_id
    assert "$0.005" in summary


def test_in_memory_providers_are_used_as_given(
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, info_logging: None
) -> None:
    ledger = make_ledger(None)
    run = ledger.start_run("acme", "proj-1", "build", "validator")
    with run.model_call("gpt-4.1", cost_usd=0) as call:
        call.set_attribute("note", "reply to ops@example.com")
    run.log("checked 3 rules", rules=3)
    with pytest.raises(ZeroDivisionError), run.model_call("gpt-4.1", cost_usd=0):
        raise ZeroDivisionError("bad math")
    run.finish()
    spans = {s.name: s for s in telemetry.finished_spans()}
    chat = next(s for s in telemetry.finished_spans() if s.status.status_code.name == "ERROR")
    assert chat.attributes["error.type"] == "ZeroDivisionError"
    assert spans["chat gpt-4.1"].parent.span_id == spans["invoke_agent validator"].context.span_id
    noted = [s for s in telemetry.finished_spans() if "note" in (s.attributes or {})]
    assert noted[0].attributes["note"] == "reply to [REDACTED:email]"
    [step] = [r for r in telemetry.log_records() if r.body == "checked 3 rules"]
    assert step.attributes["rules"] == 3
    assert format(step.trace_id, "032x") == run.trace_id


def test_traces_are_rate_limited_but_events_never_sampled(
    make_ledger: Callable[..., Ledger], otlp_receiver: OtlpReceiver
) -> None:
    ledger = make_ledger(
        None,
        telemetry=TelemetryOptions(),
        costs=UNCAPPED,
        environ={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
                 "RUNLEDGER_TRACES_PER_SECOND": "2"},
    )  # fmt: skip
    runs = []
    for i in range(12):
        with ledger.run("acme", "proj-1", "build", "implementer") as run:
            with run.model_call("gpt-4.1", cost_usd=0.001) as call:
                call.record(tokens_in=i, tokens_out=i)
        runs.append(run)
    ledger.flush(5)
    traces: dict[str, set[str]] = {}
    for _, span in otlp_receiver.spans():
        traces.setdefault(span.trace_id.hex(), set()).add(span.name)
    assert 1 <= len(traces) <= 4  # a burst of 2 plus what refilled meanwhile
    # Parent-based: a sampled run keeps its model-call span.
    assert all(names == {"invoke_agent implementer", "chat gpt-4.1"} for names in traces.values())
    # Events are never sampled: every run's start and end is in the spool.
    assert ledger.pending() == 24
    assert all(r.trace_id for r in runs)


def test_rate_limiting_sampler_refills_over_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import runledger.sdk._telemetry as telemetry_module

    now = [100.0]
    monkeypatch.setattr(telemetry_module.time, "monotonic", lambda: now[0])
    sampler = RateLimitingSampler(3)
    decisions = [sampler.should_sample(None, i, "run").decision.is_sampled() for i in range(5)]
    assert decisions == [True, True, True, False, False]
    now[0] += 1.0
    assert sampler.should_sample(None, 9, "run").decision.is_sampled()
    assert sampler.get_description() == "RateLimitingSampler{3/s}"


def test_no_secret_or_pii_leaves_the_process(
    control_server: str,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    otlp_receiver: OtlpReceiver,
    sql: Sql,
    info_logging: None,
) -> None:
    ledger = make_ledger(
        control_server,
        agent["token"],
        telemetry=TelemetryOptions(),
        prompt_audit=True,
        environ={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url},
    )
    texts = [text for _, text, _ in SECRETS]
    log = logging.getLogger("agent")
    with (
        pytest.raises(RuntimeError),
        ledger.run(
            "acme", "proj-1", "build", "implementer", attributes={"ticket": texts[0]}
        ) as run,
    ):
        for i, text in enumerate(texts):
            log.info("step %d: %s", i, text)
            log.warning(text, extra={"detail": text})
            with run.model_call("gpt-4.1", attributes={"prompt.preview": text}) as call:
                call.set_attribute("note", text)
                call.audit(text, response=f"echo {text}")
                call.record(tokens_in=10, tokens_out=1)
            run.validation_failed(text, artifact_path="out.md", artifact_version=1)
            run.user_override(text)
            with run.external_call("crm", summary=text, attributes={"q": text}):
                pass
            run.log(text, detail=text)
        for text in ORDINARY:
            log.info(text)
            run.validation_failed(text)
        raise RuntimeError("crashed with " + " ".join(texts))
    assert ledger.flush(15)
    assert ledger.dead_letters() == []

    sent: list[str] = []
    sent += [req.SerializeToString().decode("utf-8", "replace") for req in otlp_receiver.traces]
    sent += [req.SerializeToString().decode("utf-8", "replace") for req in otlp_receiver.logs]
    sent += [r[0] for r in sql("SELECT payload::text FROM events")]
    sent += [r[0] or "" for r in sql("SELECT error FROM runs")]
    sent += [r[0] for r in sql("SELECT reason FROM failures")]
    sent += [r[0] + (r[1] or "") for r in sql(
        "SELECT prompt_redacted, response_redacted FROM prompt_audit")]  # fmt: skip
    blob = "\n".join(sent)
    assert len(sql("SELECT 1 FROM prompt_audit")) == len(texts)
    leaked = [secret for secret in FORBIDDEN if secret in blob]
    assert leaked == []
    assert "[REDACTED:email]" in blob and "[REDACTED:coordinates city=" in blob
    reasons = {
        r[0] for r in sql("SELECT payload->>'reason' FROM events WHERE type = 'validation_failed'")
    }
    for text in ORDINARY:
        assert text in reasons  # ordinary text is left intact
        assert text in blob


# Every text of both corpora, and the fragments of each that must not leave the process.
CORPUS: list[tuple[str, tuple[str, ...]]] = [
    *((text, (value,)) for _, text, value in SECRETS),
    *((text, fragments) for cases in (CLOUD_SECRETS, URL_CREDENTIALS, WEBHOOKS,
                                       NATIONAL_PHONES, BASE64_CREDENTIALS, NON_ASCII_EMAILS)
      for _, text, fragments in cases),
]  # fmt: skip

TRACES = {
    "otel disabled": ({"OTEL_SDK_DISABLED": "true"}, None),
    "no span exporter": ({"OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}, None),
    "no-op provider": ({}, trace.NoOpTracerProvider()),
}


@pytest.mark.parametrize("setup", list(TRACES))
def test_runs_carry_real_distinct_trace_ids_whether_or_not_spans_are_exported(
    control_server: str,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    telemetry: Telemetry,
    sql: Sql,
    setup: str,
) -> None:
    environ, provider = TRACES[setup]
    options = TelemetryOptions(tracer_provider=provider, logger_provider=telemetry.logger_provider)
    ledger = make_ledger(control_server, agent["token"], environ=environ, telemetry=options)
    calls = {}
    for _ in range(3):
        with ledger.run("acme", "proj-1", "build", "implementer") as run:
            with run.model_call("gpt-4.1", cost_usd=0.001) as call:
                calls[run.run_id] = trace.get_current_span().get_span_context()
                run.emit("phase_entered")  # an event inside the model call
                call.record(tokens_in=1, tokens_out=1)
        assert run.trace_id is not None and int(run.trace_id, 16) != 0
    assert ledger.flush(10)
    trace_ids = set()
    for run_id, call in calls.items():
        [(trace_id,)] = sql("SELECT DISTINCT trace_id FROM events WHERE run_id = %s", run_id)
        assert len(trace_id) == 32 and trace_id.strip("0"), trace_id
        assert sql("SELECT trace_id FROM runs WHERE run_id = %s", run_id) == [(trace_id,)]
        assert format(call.trace_id, "032x") == trace_id  # the call is in the run's trace
        [(span_id,)] = sql("SELECT span_id FROM events WHERE type = 'phase_entered' "
                           "AND run_id = %s", run_id)  # fmt: skip
        assert span_id.strip("0") and span_id == format(call.span_id, "016x")
        trace_ids.add(trace_id)
    assert len(trace_ids) == 3


def test_nothing_put_on_the_sdks_spans_leaks_through_an_applications_global_provider(
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The application installed its own SDK provider globally: the SDK uses it as it is,
    # with no redacting exporter of its own, so the SDK's spans must be redacted at source.
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    ledger = make_ledger(
        None, telemetry=TelemetryOptions(logger_provider=telemetry.logger_provider),
        costs=UNCAPPED,
    )  # fmt: skip
    texts = [text for text, _ in CORPUS]
    with (
        pytest.raises(RuntimeError),
        ledger.run(
            "acme", "proj-1", "build", "implementer", attributes={"ticket": texts[0]}
        ) as run,
    ):
        for text in texts:
            span = trace.get_current_span()  # the run's span
            span.add_event(text, {"detail": text, text: 1})
            span.set_attribute("note", text)
            span.record_exception(ValueError(text), attributes={"extra": text})
            with run.model_call("gpt-4.1", cost_usd=0, attributes={"q": text}) as call:
                current = trace.get_current_span()
                current.add_event("tool call", {"input": text})
                current.set_attributes({"answer": text, "list": [text, "ok"]})
                current.set_status(Status(StatusCode.ERROR, text))
                call.set_attribute("note", text)
                with (
                    pytest.raises(KeyError),
                    trace.use_span(current, record_exception=True, set_status_on_exception=True),
                ):
                    raise KeyError(text)
            with run.external_call(f"crm {text}", summary=text) as ext:
                trace.get_current_span().record_exception(RuntimeError(text))
                trace.get_current_span().update_name(f"external {text}")
                ext.summary = text
        raise RuntimeError("crashed with " + " ".join(texts))
    spans = exported.get_finished_spans()
    assert len(spans) == 1 + 2 * len(texts)
    blob = "\n".join(s.to_json() for s in spans)
    for span in spans:  # each span holds recorded exceptions (the run's up to its limit)
        recorded = [e for e in span.events if e.name == "exception"]
        assert recorded and all("exception.stacktrace" in (e.attributes or {}) for e in recorded)
    leaked = [f for _, fragments in CORPUS for f in fragments if f in blob]
    assert leaked == []
    assert "[REDACTED:aws_secret_key]" in blob and "[REDACTED:webhook_url]" in blob


def test_text_cut_to_its_limit_is_redacted_first_and_accepted_by_the_ledger(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    key = "sk-proj-Qw3rTy9UiOp4AsDfGhJkL1ZxCvBnM0qW"
    straddling = "x" * 480 + f" {key} and more"  # the 500-character cut falls inside the key
    crash = " ".join(text for _, text, _ in SECRETS)  # longer than 500 once redacted
    ledger = make_ledger(control_server, agent["token"])
    for text in (straddling, crash):
        run = ledger.start_run("acme", "proj-1", "build", "publisher")
        run.validation_failed(text)
        run.publish_done("site/index.html", 1, instructions=text)
        run.user_override(text)
        run.impersonation_started("support-7", reason=text)
        with run.external_call("crm", summary=text):
            pass
        run.partial(summary=text, missing=text)
        ledger.start_run("acme", "proj-1", "build", "implementer").fail(RuntimeError(text))
        ledger.start_run("acme", "proj-1", "build", "implementer").finish(summary=text)
    assert ledger.flush(10)
    assert ledger.dead_letters() == []
    texts = [r[0] for r in sql("SELECT payload::text FROM events")]
    texts += [r[0] for r in sql("SELECT reason FROM failures")]
    blob = "\n".join(texts)
    assert key[:12] not in blob
    assert [value for _, _, value in SECRETS if value in blob] == []
    assert blob.count("[REDACTED:openai_key]") >= 9
