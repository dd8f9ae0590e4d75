"""OpenTelemetry plumbing: providers from the environment, sampling, redaction, run logs,
and the spans of runs and calls (real W3C ids, redacted whatever provider exports them)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry._logs import LoggerProvider as APILoggerProvider
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status
from opentelemetry.trace.status import StatusCode
from opentelemetry.util.types import Attributes

from runledger import __version__
from runledger.redact import Redactor
from runledger.sdk._config import Settings
from runledger.sdk._services import RunServices

__all__ = [
    "LoggedRun",
    "RateLimitingSampler",
    "RedactingLogProcessor",
    "RedactingSpan",
    "RedactingSpanExporter",
    "RunLogHandler",
    "build_logger_provider",
    "build_tracer_provider",
    "in_context",
    "severity",
    "with_trace_ids",
]

_IDS = RandomIdGenerator()


def with_trace_ids(span: Span) -> Span:
    """Return ``span``, or, when it has no ids, a non-recording span with fresh W3C ids.

    A no-op tracer (``OTEL_SDK_DISABLED``, a no-op provider) gives spans the all-zero
    invalid context; a run still needs a real trace id for its events and exemplars, and the
    calls of the run (children of this span in its context) share it.
    """
    if span.get_span_context().is_valid:
        return span
    return NonRecordingSpan(
        SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False)
    )


class RedactingSpan(Span):
    """A span that redacts whatever is put on it: attributes, events, exceptions, status, name.

    Runs and calls put this in the context, so code inside them that adds to the current
    span (``trace.get_current_span().record_exception(exc)``, instrumentation adding events)
    is redacted whichever tracer provider exports the span, an application's global one
    included.
    """

    __slots__ = ("_redactor", "_span")

    def __init__(self, span: Span, redactor: Redactor) -> None:
        self._span = span
        self._redactor = redactor

    def get_span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._span.set_attributes(self._redactor.attributes(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attributes(self._redactor.attributes({key: value}))

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        r = self._redactor
        self._span.add_event(r.text(name), r.attributes(attributes or {}), timestamp)

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        self._span.add_link(context, self._redactor.attributes(attributes or {}))

    def update_name(self, name: str) -> None:
        self._span.update_name(self._redactor.text(name))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        r = self._redactor
        if isinstance(status, Status) and status.description:
            status = Status(status.status_code, r.text(status.description))
        self._span.set_status(status, r.text(description) if description else None)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The OpenTelemetry SDK's own event, built here so that add_event redacts it.
        kind = type(exception)
        module = kind.__module__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)


def in_context(span: Span, redactor: Redactor) -> Span:
    """Return the span to put in the context of a run or call: a redacting one if recording."""
    return RedactingSpan(span, redactor) if span.is_recording() else span


class RateLimitingSampler(Sampler):
    """Sample at most ``per_second`` new traces a second (a token bucket, burst = one second).

    Use it as the root of ``ParentBased`` so a sampled run keeps all its spans.
    """

    def __init__(self, per_second: float) -> None:
        self.per_second = float(per_second)
        self._tokens = self.per_second
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            take = self._tokens >= 1.0
            if take:
                self._tokens -= 1.0
        decision = Decision.RECORD_AND_SAMPLE if take else Decision.DROP
        return SamplingResult(decision, attributes if take else None)

    def get_description(self) -> str:
        return f"RateLimitingSampler{{{self.per_second:g}/s}}"


class RedactingSpanExporter(SpanExporter):
    """Redact span names, attributes and span events before handing spans to ``inner``."""

    def __init__(self, inner: SpanExporter, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._clean(s) for s in spans])

    def _clean(self, span: ReadableSpan) -> ReadableSpan:
        r = self.redactor
        events = [
            type(e)(r.text(e.name), r.attributes(e.attributes or {}), e.timestamp)
            for e in span.events
        ]
        return ReadableSpan(
            name=r.text(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=r.attributes(span.attributes or {}),
            events=events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RedactingLogProcessor(LogRecordProcessor):
    """Redact log bodies and attributes before ``inner`` (a batch processor) sees them."""

    def __init__(self, inner: LogRecordProcessor, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def on_emit(self, log_record: Any) -> None:
        record = getattr(log_record, "log_record", log_record)
        if isinstance(record.body, str):
            record.body = self.redactor.text(record.body)
        if record.attributes:
            record.attributes = self.redactor.attributes(record.attributes)
        self.inner.on_emit(log_record)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _resource(settings: Settings) -> Resource:
    attrs: dict[str, Any] = {"telemetry.sdk.name": "opentelemetry", "service.version": __version__}
    attrs.update(settings.resource_attributes)
    attrs["service.name"] = (
        settings.service_name
        or settings.resource_attributes.get("service.name")
        or "runledger-agent"
    )
    return Resource(attrs)


def build_tracer_provider(settings: Settings, redactor: Redactor) -> TracerProvider:
    """Build a tracer provider from the settings: OTLP/HTTP, batched, redacted, sampled."""
    if settings.sampler_from_env:
        # OTEL_TRACES_SAMPLER wins. The Ledger shuts its providers down itself, bounded in
        # time (Ledger.close); the SDK's own exit hook would wait for a dead collector.
        provider = TracerProvider(resource=_resource(settings), shutdown_on_exit=False)
    else:
        sampler = ParentBased(root=RateLimitingSampler(settings.traces_per_second))
        provider = TracerProvider(
            resource=_resource(settings), sampler=sampler, shutdown_on_exit=False
        )
    if settings.traces_exporter == "otlp" and not settings.otel_disabled:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=settings.traces_endpoint, headers=settings.otlp_headers or None
        )
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter, redactor)))
    return provider


def build_logger_provider(settings: Settings, redactor: Redactor) -> LoggerProvider:
    """Build a logger provider from the settings: OTLP/HTTP, batched, redacted."""
    provider = LoggerProvider(resource=_resource(settings), shutdown_on_exit=False)
    if settings.logs_exporter == "otlp" and not settings.otel_disabled:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(
            endpoint=settings.logs_endpoint, headers=settings.otlp_headers or None
        )
        provider.add_log_record_processor(
            RedactingLogProcessor(BatchLogRecordProcessor(exporter), redactor)
        )
    return provider


_SEVERITY = (
    (logging.CRITICAL, SeverityNumber.FATAL),
    (logging.ERROR, SeverityNumber.ERROR),
    (logging.WARNING, SeverityNumber.WARN),
    (logging.INFO, SeverityNumber.INFO),
    (logging.DEBUG, SeverityNumber.DEBUG),
)
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def severity(levelno: int) -> SeverityNumber:
    """Map a ``logging`` level to an OpenTelemetry severity."""
    for level, number in _SEVERITY:
        if levelno >= level:
            return number
    return SeverityNumber.TRACE


class LoggedRun(Protocol):
    """What run logs read of a run (``Run`` implements it)."""

    @property
    def services(self) -> RunServices: ...

    @property
    def log_attributes(self) -> dict[str, Any]: ...

    def log_context(self) -> Context: ...


class RunLogHandler(logging.Handler):
    """Send ``logging`` records emitted inside a run as OTLP log records of that run.

    Records outside any run given ``services`` (one Ledger's runs) are ignored: run logs
    are about runs.
    """

    def __init__(
        self,
        provider: APILoggerProvider,
        redactor: Redactor,
        current_run: Callable[[], LoggedRun | None],
        services: RunServices,
        level: int = logging.INFO,
    ) -> None:
        super().__init__(level)
        self._logger = provider.get_logger("runledger.run", __version__)
        self._redactor = redactor
        self._current_run = current_run
        self._services = services

    def emit(self, record: logging.LogRecord) -> None:
        run = self._current_run()
        if (
            run is None
            or run.services is not self._services
            or record.name.startswith("runledger.sdk")
        ):
            return
        try:
            body = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                body += "\n" + "".join(traceback.format_exception(*record.exc_info))
            attrs: dict[str, Any] = dict(run.log_attributes)
            attrs["logger.name"] = record.name
            attrs["code.function.name"] = record.funcName
            attrs["code.line.number"] = record.lineno
            for key, value in vars(record).items():
                if key not in _RECORD_FIELDS and isinstance(value, (str, int, float, bool)):
                    attrs[key] = value
            self._logger.emit(
                timestamp=int(record.created * 1e9),
                context=run.log_context(),
                severity_number=severity(record.levelno),
                severity_text=record.levelname,
                body=self._redactor.text(body),
                attributes=self._redactor.attributes(attrs),
            )
        except Exception:
            self.handleError(record)
