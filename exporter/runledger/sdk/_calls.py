"""The calls of a run: model calls (a GenAI span, tokens, cost) and external calls."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from runledger.money import usd
from runledger.redact import Redactor
from runledger.sdk._costs import CostGuard, Ticket
from runledger.sdk._services import RunServices, Usage
from runledger.sdk._telemetry import in_context
from runledger.sdk._usage import usage_from_response

__all__ = [
    "CURRENT_RUN",
    "CallingRun",
    "ExternalCall",
    "ModelCall",
    "ModelRequest",
    "model_call",
    "one_line",
    "usd",
]

F = TypeVar("F", bound=Callable[..., Any])

_ZERO = Decimal(0)
_SERVICE_CHARS = re.compile(r"[^A-Za-z0-9._:/-]+")


class CallingRun(Protocol):
    """What a model or external call uses of its run (``Run`` implements it)."""

    @property
    def run_id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def services(self) -> RunServices: ...

    @property
    def costs(self) -> CostGuard | None: ...

    @property
    def budget(self) -> object | None:
        """The run's own ``Budget`` hook, consulted through ``_budget_before/_after``."""

    @property
    def span_attributes(self) -> dict[str, Any]: ...

    def log_context(self) -> Context: ...

    def prompt_audit(
        self, prompt: str, *, response: str | None = None, model: str | None = None
    ) -> None: ...

    def _require_running(self) -> None: ...

    def _budget_before(self, kind: str, name: str) -> None: ...

    def _budget_after(
        self, kind: str, *, cost_usd: Decimal, tokens_in: int, tokens_out: int
    ) -> None: ...

    def _add_usage(self, usage: Usage) -> None: ...

    def _add_external(self, cost: Decimal, payload: dict[str, Any]) -> str: ...

    def _log(
        self, message: str, level: int, attributes: Mapping[str, Any], context: Context
    ) -> None: ...


CURRENT_RUN: ContextVar[CallingRun | None] = ContextVar("runledger_current_run", default=None)
"""The run active in this context (``with ledger.run(...)``); ``model_call()`` without a run
uses it. It lives here so that calls need not import the run module."""


def one_line(text: str, redactor: Redactor, limit: int = 500) -> str:
    """Return ``text`` on one line, redacted, then cut to ``limit`` characters."""
    return redactor.text(" ".join(text.split()), limit=limit)


def _service(name: str, redactor: Redactor) -> str:
    """Return the ``external_call`` service for a call named ``name`` (already redacted).

    Only ``A-Za-z0-9._:/-``, 128 at most, cut after redaction; and cut before whatever a
    second redaction (the ledger's) would still change: ``api_key:-REDACTED:api_key`` reads
    as a secret assignment again, while the service must stay as it is to be valid.
    """
    service = _SERVICE_CHARS.sub("-", name).strip("-")[:128]
    while service:
        again = redactor.text(service)
        if again == service:
            break
        changed = next(
            (i for i, (a, b) in enumerate(zip(service, again, strict=False)) if a != b),
            len(service),
        )
        service = service[:changed].rstrip("-")
    if not service:
        return "external"
    return service if service[0].isalnum() else "x" + service[:127]


def _active_run() -> CallingRun:
    run = CURRENT_RUN.get()
    if run is None:
        raise RuntimeError(
            "model_call outside a run: use `with ledger.run(...)` or `run.model_call(...)`"
        )
    return run


def _consult_budget(run: CallingRun, kind: str, name: str, ticket: Ticket | None) -> Ticket | None:
    """Ask the run's budget hook about a call; give the call's ``ticket`` back if it refuses."""
    try:
        run._budget_before(kind, name)
    except BaseException:
        if run.costs is not None and ticket is not None:
            run.costs.release(ticket)
        raise
    return ticket


def _child_span(
    run: CallingRun, name: str, attrs: dict[str, Any], extra: Mapping[str, Any] | None
) -> tuple[Any, object]:
    """Start a call's client span named ``name`` (redacted here) with ``attrs`` (the run's
    and the call's, redacted by the caller) and ``extra`` (the caller's, redacted here); make
    it current. Return the span and the context token to detach."""
    redactor = run.services.redactor
    if extra:
        attrs.update(redactor.attributes(extra))
    span = run.services.tracer.start_span(
        redactor.text(name), context=run.log_context(), kind=SpanKind.CLIENT, attributes=attrs
    )
    return span, otel_context.attach(trace.set_span_in_context(in_context(span, redactor)))


@dataclass(slots=True)
class ModelRequest:
    """What a model call asks for; see ``Run.model_call`` for each field.

    Not frozen only because a frozen dataclass takes three times as long to build, once per
    call: nothing changes a request after it is made.
    """

    model: str
    operation: str = "chat"
    provider: str | None = None
    cached: bool = False
    cost_usd: Decimal | None = None
    attributes: Mapping[str, Any] | None = None
    prompt_tokens: int | None = None
    max_tokens: int | None = None


class ModelCall:
    """One model call of a run: a GenAI client span plus its tokens and cost.

    Enter it (``with``) or decorate a function with it; call ``record`` with the usage.
    """

    def __init__(self, run: CallingRun | None, request: ModelRequest) -> None:
        self.run = run
        self.request = request
        self.model = request.model
        self.cached = request.cached
        self.cost_usd: Decimal | None = request.cost_usd
        self.lease_id: str | None = None
        """The budget lease this call's cost was settled on (None: no lease)."""
        self._ticket: Ticket | None = None
        self.tokens_in = 0
        self.tokens_out = 0
        self.cached_tokens_in = 0
        self.cache_write_tokens_in = 0
        self.reasoning_tokens = 0
        self.response_model: str | None = None
        self.finish_reasons: tuple[str, ...] | None = None
        self._recorded = False
        self._span: Any = None
        self._token: object | None = None

    def __enter__(self) -> ModelCall:
        run = self.run
        if run is None:
            run = self.run = _active_run()
        run._require_running()
        req = self.request
        if self.cost_usd is None and not self.cached:
            run.services.check_priced(self.model, run.tenant_id)
        costs = run.costs
        ticket = None
        if costs is not None:
            ticket = costs.before_model(
                self.model, prompt_tokens=req.prompt_tokens, max_tokens=req.max_tokens,
                cost_usd=self.cost_usd, cached=self.cached,
            )  # fmt: skip
        if run.budget is not None:
            ticket = _consult_budget(run, "model", self.model, ticket)
        self._ticket = ticket
        text = run.services.redactor.text
        attrs: dict[str, Any] = {
            **run.span_attributes,
            "gen_ai.operation.name": text(req.operation),
            "gen_ai.request.model": text(self.model),
        }
        if req.provider:
            attrs["gen_ai.provider.name"] = attrs["gen_ai.system"] = text(req.provider)
        self._span, self._token = _child_span(
            run, f"{req.operation} {self.model}", attrs, req.attributes
        )
        return self

    def record(
        self,
        *,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cached_tokens_in: int | None = None,
        cost_usd: Decimal | float | None = None,
        response_model: str | None = None,
        finish_reasons: tuple[str, ...] | list[str] | None = None,
        response: Any = None,
        cache_write_tokens_in: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """Record the call's usage: explicit counts, or read from a provider ``response``.

        ``tokens_in`` counts every input token, cache reads (``cached_tokens_in``) and
        cache writes (``cache_write_tokens_in``) included; ``tokens_out`` counts reasoning
        tokens too. ``response`` may be any major provider's response object (docs/sdk.md).
        """
        if response is not None:
            found = usage_from_response(response)
            tokens_in = found.get("tokens_in", tokens_in)
            tokens_out = found.get("tokens_out", tokens_out)
            cached_tokens_in = found.get("cached_tokens_in", cached_tokens_in)
            cache_write_tokens_in = found.get("cache_write_tokens_in", cache_write_tokens_in)
            reasoning_tokens = found.get("reasoning_tokens", reasoning_tokens)
            response_model = response_model or found.get("response_model")
        if tokens_in is not None:
            self.tokens_in = int(tokens_in)
        if tokens_out is not None:
            self.tokens_out = int(tokens_out)
        if cached_tokens_in is not None:
            self.cached_tokens_in = int(cached_tokens_in)
        if cache_write_tokens_in is not None:
            self.cache_write_tokens_in = int(cache_write_tokens_in)
        if reasoning_tokens is not None:
            self.reasoning_tokens = int(reasoning_tokens)
        if cost_usd is not None:
            self.cost_usd = usd(cost_usd, name="cost_usd")
        if response_model:
            self.response_model = response_model
        if finish_reasons:
            self.finish_reasons = tuple(finish_reasons)
        self._recorded = True

    def set_attribute(self, key: str, value: Any) -> None:
        """Set a span attribute (redacted)."""
        self._span.set_attribute(key, self.run.services.redactor.value(value, key))  # type: ignore[union-attr]

    def audit(self, prompt: str, response: str | None = None) -> None:
        """Store this call's redacted prompt and response in ``prompt_audit``, if enabled."""
        run = self.run if self.run is not None else CURRENT_RUN.get()
        if run is None:
            raise RuntimeError("audit outside a run")
        run.prompt_audit(prompt, response=response, model=self.model)

    def _cost(self, run: CallingRun) -> Decimal:
        if self.cost_usd is not None:
            return self.cost_usd
        if self.cached:
            return _ZERO
        return run.services.pricing().cost(
            self.model, tokens_in=self.tokens_in, tokens_out=self.tokens_out,
            cached_tokens_in=self.cached_tokens_in,
            cache_write_tokens_in=self.cache_write_tokens_in, tenant_id=run.tenant_id,
        )  # fmt: skip

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        run = self.run
        assert run is not None
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        cost: Decimal | None = None
        try:
            cost = self._cost(run)
        finally:
            attrs: dict[str, Any] = {
                "gen_ai.usage.input_tokens": self.tokens_in,
                "gen_ai.usage.output_tokens": self.tokens_out,
                "runledger.cached": self.cached,
                "runledger.cost_usd": float(cost) if cost is not None else 0.0,
            }
            if self.cached_tokens_in:
                attrs["gen_ai.usage.cache_read.input_tokens"] = self.cached_tokens_in
            if self.cache_write_tokens_in:
                attrs["gen_ai.usage.cache_creation.input_tokens"] = self.cache_write_tokens_in
            if self.reasoning_tokens:
                attrs["gen_ai.usage.reasoning.output_tokens"] = self.reasoning_tokens
            text = run.services.redactor.text
            if self.response_model:
                attrs["gen_ai.response.model"] = text(self.response_model)
            if self.finish_reasons:
                attrs["gen_ai.response.finish_reasons"] = tuple(map(text, self.finish_reasons))
            if exc is not None:
                attrs["error.type"] = text(type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, text(str(exc))))
            span.set_attributes(attrs)
            span.end()
            if run.costs is not None and self._ticket is not None:
                self.lease_id = run.costs.after(
                    self._ticket, tokens=self.tokens_in + self.tokens_out,
                    usd=cost if cost is not None else _ZERO,
                )  # fmt: skip
        run._add_usage(
            Usage(self.tokens_in, self.tokens_out, cost, self.model, self.cached, self.lease_id)
        )
        if run.budget is not None:
            run._budget_after(
                "model", cost_usd=cost, tokens_in=self.tokens_in, tokens_out=self.tokens_out
            )

    def __call__(self, func: F) -> F:
        """Decorate ``func``: each call is a model call; a returned response is read for usage."""

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with ModelCall(self.run, self.request) as call:
                result = func(*args, **kwargs)
                if not call._recorded:
                    call.record(response=result)
                return result

        return wrapper  # type: ignore[return-value]


def model_call(
    model: str,
    *,
    operation: str = "chat",
    provider: str | None = None,
    cached: bool = False,
    cost_usd: Decimal | float | None = None,
    attributes: Mapping[str, Any] | None = None,
    prompt_tokens: int | None = None,
    max_tokens: int | None = None,
) -> ModelCall:
    """A model call in the current run (context manager or decorator); see ``Run.model_call``.

    Usage::

        @model_call(model="claude-sonnet-4", provider="anthropic")
        def draft(prompt: str) -> Message:
            return client.messages.create(...)   # usage read from the response
    """
    cost = None if cost_usd is None else usd(cost_usd, name="cost_usd")
    request = ModelRequest(
        model, operation, provider, cached, cost, attributes, prompt_tokens, max_tokens
    )
    return ModelCall(None, request)


class ExternalCall:
    """A non-model call of a run: a span, an ``external_call`` event, a run-log line."""

    def __init__(
        self,
        run: CallingRun,
        name: str,
        *,
        cost_usd: Decimal | float | None = None,
        summary: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.run = run
        self.name = name
        self.cost_usd: Decimal | float | None = cost_usd
        self.summary = summary
        self._attributes = attributes
        self._span: Any = None
        self._token: object | None = None
        self._t0 = 0.0
        self.event_id: str | None = None
        self.lease_id: str | None = None
        self._ticket: Ticket | None = None

    def __enter__(self) -> ExternalCall:
        run = self.run
        run._require_running()
        costs = run.costs
        ticket = None
        if costs is not None:
            announced = None if self.cost_usd is None else usd(self.cost_usd, name="cost_usd")
            ticket = costs.before_external(self.name, announced)
        if run.budget is not None:
            ticket = _consult_budget(run, "external", self.name, ticket)
        self._ticket = ticket
        self._span, self._token = _child_span(
            run, f"external {self.name}",
            {**run.span_attributes,
             "runledger.external.service": run.services.redactor.text(self.name)},
            self._attributes,
        )  # fmt: skip
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        run = self.run
        duration_ms = (time.perf_counter() - self._t0) * 1000.0
        otel_context.detach(self._token)  # type: ignore[arg-type]
        cost = usd(self.cost_usd, name="cost_usd") if self.cost_usd is not None else _ZERO
        status = "error" if exc is not None else "ok"
        redactor = run.services.redactor
        name = redactor.text(self.name)
        summary = one_line(
            self.summary
            or f"{self.name} {status}" + (f": {type(exc).__name__}" if exc is not None else ""),
            redactor,
        )
        self._span.set_attributes(
            {"runledger.cost_usd": float(cost), "runledger.external.status": status}
        )
        if exc is not None:
            self._span.set_status(Status(StatusCode.ERROR, redactor.text(str(exc))))
            self._span.set_attribute("error.type", redactor.text(type(exc).__qualname__))
        run._log(
            f"external call {name}: {summary} ({duration_ms:.0f} ms, "
            f"${format(cost.normalize(), 'f')})",
            logging.WARNING if exc is not None else logging.INFO,
            {"runledger.external.service": name, "runledger.cost_usd": float(cost)},
            trace.set_span_in_context(self._span),
        )
        self._span.end()
        service = _service(name, redactor)
        if run.costs is not None and self._ticket is not None:
            self.lease_id = run.costs.after(self._ticket, external_usd=cost)
        payload: dict[str, Any] = {
            "service": service,
            "summary": summary,
            "status": status,
            "duration_ms": round(duration_ms, 3),
        }
        if self.lease_id is not None:
            payload["lease_id"] = self.lease_id
        self.event_id = run._add_external(cost, payload)
        if run.budget is not None:
            run._budget_after("external", cost_usd=cost, tokens_in=0, tokens_out=0)
