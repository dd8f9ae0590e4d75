"""OTLP spans to ledger events and ``trace_spans`` rows (the mapping docs/otlp.md describes).

A span following the OpenTelemetry GenAI conventions with a model and token usage becomes a
``model_call`` event priced from the pricing table; the root span of a trace that names no
run becomes that run's ``run_started`` and ``run_finished`` (or ``run_failed``). Every event
id is derived from the trace id, span id and event type, so a re-sent export is a duplicate.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import ValidationError

from runledger.cost.pricing import PricingError, PricingTable
from runledger.events import EVENT_MODELS, IDENT_PATTERN
from runledger.redact import Redactor
from runledger.store.ingest import IngestLimits
from runledger.store.spans import SpanRow
from runledger.store.tokens import Principal

__all__ = [
    "EVENT_NAMESPACE",
    "AttributeRedactor",
    "MappedBatch",
    "event_id",
    "map_request",
    "validate_events",
]

EVENT_NAMESPACE = uuid.UUID("0b7f8d64-2f7e-4c1e-9a55-5d3b2f0c6a91")
"""UUIDv5 namespace of event ids derived from spans: ``uuid5(NS, trace:span:type)``."""

# runledger context: the names this receiver documents first, then the SDK's span names.
TENANT_KEYS = ("runledger.tenant", "runledger.tenant_id")
PROJECT_KEYS = ("runledger.project", "runledger.project_id")
RUN_KEYS = ("runledger.run", "runledger.run_id")
PHASE_KEYS = ("runledger.phase",)
ROLE_KEYS = ("runledger.role",)
DEFAULT_PHASE = "otel"
DEFAULT_ROLE = "agent"

# GenAI semantic conventions, and the older or instrumentation-specific names beside them.
INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",  # semconv
    "gen_ai.usage.cache_read_input_tokens",  # OpenLLMetry
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",  # semconv
    "gen_ai.usage.cache_creation_input_tokens",  # OpenLLMetry
    "gen_ai.usage.cache_write.input_tokens",  # opentelemetry-util-genai
)
REASONING_KEYS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
NOT_MODEL_CALLS = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "retrieval"}
)
"""Operations whose spans may repeat their children's usage: never counted."""
SDK_ACCOUNTED = "runledger.cost_usd"
"""Set by the runledger SDK on its own model-call spans, whose usage its events carry."""
BATCH_KEY = "runledger.batch"

CONTENT_PREFIXES = (
    "gen_ai.prompt", "gen_ai.completion", "gen_ai.input.messages", "gen_ai.output.messages",
    "gen_ai.system_instructions", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
    "gen_ai.tool.definitions", "llm.prompts", "llm.completions", "traceloop.entity.input",
    "traceloop.entity.output",
)  # fmt: skip
"""Prompt and response content: never stored with a span (prompt audit is opt-in)."""

MAX_ATTRIBUTES = 128
MAX_TEXT = 1000
_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUSES = ("unset", "ok", "error")
_NOT_IDENT = re.compile(r"[^A-Za-z0-9._:-]+")
_IDENT = re.compile(IDENT_PATTERN)


_NS_SHA1 = hashlib.sha1(EVENT_NAMESPACE.bytes, usedforsecurity=False)
"""SHA-1 state after the namespace: each event id copies it and hashes only its own name."""
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
"""RFC 4122 variant: the top two bits of byte 8 set to 10, as hex of its high nibble."""


def event_id(trace_id: str, span_id: str, kind: str) -> str:
    """Return the id of the ``kind`` event derived from span ``span_id`` of ``trace_id``.

    ``uuid5(EVENT_NAMESPACE, f"{trace_id}:{span_id}:{kind}")``, as text, computed without
    building a ``UUID`` object (this runs for every span): version 5 sets byte 6's high
    nibble, the variant byte 8's top two bits.
    """
    sha = _NS_SHA1.copy()
    sha.update(f"{trace_id}:{span_id}:{kind}".encode())
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@dataclass
class MappedBatch:
    """What one export request maps to."""

    spans: list[SpanRow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_span: list[int] = field(default_factory=list)
    """For each event, the index in ``spans`` of the span it came from."""
    rejected: list[str] = field(default_factory=list)
    """Why each span refused before it became events was refused."""
    model_call_spans: list[bool] = field(default_factory=list)
    """For each span, True when it reports a model call (False: stored, not a cost)."""
    unpriced: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(tenant, model) of GenAI spans whose model has no price."""


_SCALAR_FIELDS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def _value(v: AnyValue) -> Any:
    fields = v.ListFields()  # the one member of the oneof that is set, if any
    if not fields:
        return None
    field, value = fields[0]
    name = field.name
    if name in _SCALAR_FIELDS:
        return value
    if name == "array_value":
        return [_value(x) for x in value.values]
    if name == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.values}
    if name == "bytes_value":
        return value.hex()
    return None


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Return OTLP key-values as a plain mapping (one pass; strings and ints read directly)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = v.string_value
        elif which == "int_value":
            out[kv.key] = v.int_value
        else:
            out[kv.key] = _value(v) if which is not None else None
    return out


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _count(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """Return a token count attribute as an int (OTLP/JSON may send it as a double)."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            break
    else:
        return None
    if type(value) is int and value >= 0:  # the common case
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{keys[0]} must be a non-negative integer, got {value!r}")
    return value


_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(nanos: int) -> datetime:
    """Return the UTC time of ``nanos`` since the epoch, truncated to the microsecond."""
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def _ident(text: str) -> str:
    return _NOT_IDENT.sub("-", text).strip("-.:_")[:100]


def _short(value: Any) -> str | None:
    return str(value)[:128] if value is not None else None


class AttributeRedactor:
    """Redact span attributes for storage, remembering what repeats.

    Spans repeat most of their attributes (model, operation, provider, token counts under the
    same keys): an attribute redacted once is looked up, not redacted again. Both memories
    are bounded; redaction is a pure function of the key and value, so a memory never
    changes a result.
    """

    _LIMIT = 20_000
    _PER_KEY = 2_000
    _MISSING = object()

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._keys: dict[str, tuple[bool, str]] = {}
        """For each key seen: whether it holds content (never stored), and the key redacted."""
        self._texts: dict[str, dict[str, Any]] = {}
        """For each key, its string values seen and each value redacted."""
        self._numeric_keys: set[str] = set()
        """Keys under which a number was seen to stay as it is (not a secret's name)."""

    def __call__(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``attrs`` to store: content dropped, long strings cut, everything redacted.

        The same as ``redactor.value`` of each attribute alone (``{key: value}``): the key is
        redacted as text, the value in the light of its key.
        """
        out: dict[str, Any] = {}
        redactor, keys, texts, numeric = self.redactor, self._keys, self._texts, self._numeric_keys
        missing = self._MISSING
        for key, value in attrs.items():
            known = keys.get(key)
            if known is None:
                known = (key.startswith(CONTENT_PREFIXES), redactor.text(key))
                if len(keys) < self._LIMIT:
                    keys[key] = known
            if known[0]:
                continue
            if len(out) >= MAX_ATTRIBUTES:
                break
            kind = type(value)
            if kind is str:
                value = value[:MAX_TEXT]
                seen = texts.get(key)
                if seen is None:
                    seen = {}
                    if len(texts) < self._LIMIT:
                        texts[key] = seen
                clean = seen.get(value, missing)
                if clean is missing:
                    clean = redactor.value(value, key)
                    if len(seen) >= self._PER_KEY:
                        seen.clear()
                    seen[value] = clean
                out[known[1]] = clean
            elif (kind is int or kind is float) and key in numeric:
                out[key] = value
            else:
                redacted = redactor.value({key: value})
                if (kind is int or kind is float) and redacted == {key: value}:
                    if len(numeric) < self._LIMIT:
                        numeric.add(key)
                out.update(redacted)
        return out


class _Refused(Exception):
    pass


@dataclass(frozen=True)
class _TimeCheck:
    """The ledger's bounds on event times (retention window, clock skew), checked per span."""

    limits: IngestLimits
    now: datetime

    def __call__(self, at: datetime, what: str) -> None:
        problem = self.limits.check(at, self.now)
        if problem:
            raise _Refused(f"{what} at {at.isoformat()}, which {problem}")


@dataclass(frozen=True)
class _Context:
    tenant: str
    project: str
    run: str
    phase: str
    role: str
    derived_run: bool


_CONTEXT_KEYS = (*TENANT_KEYS, *PROJECT_KEYS, *RUN_KEYS, *PHASE_KEYS, *ROLE_KEYS)


class _Memo:
    """What one request's spans repeat, worked out once per request.

    Contexts by the values of the runledger.* attributes (a run's spans all share one), and
    the priced model name of each (response model, request model) pair.
    """

    def __init__(self) -> None:
        self.contexts: dict[tuple[Any, ...], _Context | str] = {}
        self.models: dict[tuple[Any, Any], str | None] = {}


def _context_of(
    attrs: Mapping[str, Any], principal: Principal, trace_id: str, service: str | None,
    memo: _Memo,
) -> _Context:  # fmt: skip
    """``_context``, looked up when another span of the request had the same context."""
    key = (service, *[attrs.get(k) for k in _CONTEXT_KEYS])
    found = memo.contexts.get(key)
    if found is None:
        try:
            found = _context(attrs, principal, trace_id, service)
        except _Refused as exc:
            found = str(exc)
        if isinstance(found, str) or not found.derived_run:  # a derived run is per trace
            memo.contexts[key] = found
    if isinstance(found, str):
        raise _Refused(found)
    return found


def _context(
    attrs: Mapping[str, Any], principal: Principal, trace_id: str, service: str | None
) -> _Context:
    tenant = _first(attrs, TENANT_KEYS)
    if tenant is None:
        tenant = principal.tenant_id
    if tenant is None:
        raise _Refused(
            "names no tenant (set the runledger.tenant attribute) and the token is not bound to one"
        )
    tenant = str(tenant)
    if not principal.can_write_tenant(tenant):
        raise _Refused(
            f"is for tenant {tenant!r}; this token may write only {principal.tenant_id!r}"
        )
    run = _first(attrs, RUN_KEYS)
    project = _first(attrs, PROJECT_KEYS)
    if project is None:
        project = f"otel-{_ident(service)}" if service and _ident(service) else "otel"
    for name, value in (("runledger.tenant", tenant), ("runledger.project", project),
                        ("runledger.run", run)):  # fmt: skip
        if value is not None and not _IDENT.match(str(value)):
            raise _Refused(
                f"has an invalid {name} {str(value)[:40]!r}: 1-128 letters, digits and . _ : -"
            )
    return _Context(
        tenant=tenant,
        project=str(project),
        run=str(run) if run is not None else f"otel-{trace_id}",
        phase=str(_first(attrs, PHASE_KEYS) or DEFAULT_PHASE),
        role=str(_first(attrs, ROLE_KEYS) or DEFAULT_ROLE),
        derived_run=run is None,
    )


def _envelope(
    ctx: _Context, kind: str, trace_id: str, span_id: str, at: datetime
) -> dict[str, Any]:
    return {
        "event_id": event_id(trace_id, span_id, kind),
        "type": kind,
        "tenant_id": ctx.tenant,
        "project_id": ctx.project,
        "run_id": ctx.run,
        "phase": ctx.phase,
        "role": ctx.role,
        "occurred_at": at.isoformat(),
        "trace_id": trace_id,
        "span_id": span_id,
    }


def _model_call(
    attrs: Mapping[str, Any], ctx: _Context, pricing: PricingTable, ids: tuple[str, str],
    times: tuple[datetime, datetime], out: MappedBatch, memo: _Memo,
) -> tuple[dict[str, Any], bool] | None:  # fmt: skip
    """Return the ``model_call`` event of a GenAI span and whether it is unpriced, or None."""
    operation = attrs.get("gen_ai.operation.name")
    request_model = attrs.get("gen_ai.request.model")
    response_model = attrs.get("gen_ai.response.model")
    if operation in NOT_MODEL_CALLS or SDK_ACCOUNTED in attrs:
        return None
    if not (request_model or response_model):
        return None
    try:
        tokens_in = _count(attrs, INPUT_KEYS)
        tokens_out = _count(attrs, OUTPUT_KEYS)
        if tokens_in is None and tokens_out is None:
            return None
        tokens_in, tokens_out = tokens_in or 0, tokens_out or 0
        cache_read = _count(attrs, CACHE_READ_KEYS) or 0
        cache_write = _count(attrs, CACHE_WRITE_KEYS) or 0
        reasoning = _count(attrs, REASONING_KEYS) or 0
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    if cache_read + cache_write > tokens_in:
        # The conventions count cache traffic inside input_tokens; an instrumentation that
        # reports it beside them (as Anthropic's raw usage does) is added up here.
        tokens_in += cache_read + cache_write
    names = (response_model, request_model)
    if names in memo.models:
        model = memo.models[names]
    else:
        model = next(
            (pricing.canonical(c) for c in names if isinstance(c, str) and c in pricing), None
        )
        memo.models[names] = model
    unpriced = model is None
    cost = "0"
    if model is None:
        model = str(request_model or response_model)
        out.unpriced[(ctx.tenant, model)] += 1
    else:
        try:
            cost = str(
                pricing.cost(
                    model, tokens_in=tokens_in, tokens_out=tokens_out,
                    cached_tokens_in=cache_read, cache_write_tokens_in=cache_write,
                    batch=attrs.get(BATCH_KEY) is True, tenant_id=ctx.tenant,
                )
            )  # fmt: skip
        except PricingError as exc:
            raise _Refused(str(exc)) from None
    start, end = times
    payload: dict[str, Any] = {
        "source": "otlp",
        "operation": _short(operation),
        "provider": _short(_first(attrs, PROVIDER_KEYS)),
        "request_model": _short(request_model),
        "response_model": _short(response_model),
        "cached_tokens_in": cache_read,
        "cache_write_tokens_in": cache_write,
        "reasoning_tokens": reasoning,
        "duration_ms": round((end - start).total_seconds() * 1000.0, 3),
        "unpriced": unpriced,
    }
    event = _envelope(ctx, "model_call", ids[0], ids[1], end)
    event.update(
        tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost, model=model,
        payload={k: v for k, v in payload.items() if v is not None},
    )  # fmt: skip
    return event, unpriced


def map_request(
    req: ExportTraceServiceRequest,
    principal: Principal,
    pricing: PricingTable,
    redactor: Redactor,
    store_redactor: AttributeRedactor | None = None,
    *,
    limits: IngestLimits | None = None,
) -> MappedBatch:
    """Map every span of ``req`` to rows and events, refusing spans the token may not write."""
    out = MappedBatch()
    store_redactor = store_redactor or AttributeRedactor(redactor)
    check = _TimeCheck(limits or IngestLimits(), datetime.now(UTC))
    memo = _Memo()
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = resource.get("service.name")
        service = str(service) if service is not None else None
        for ss in rs.scope_spans:
            for span in ss.spans:
                try:
                    _map_span(
                        span, resource, service, principal, pricing,
                        (redactor, store_redactor), check, out, memo,
                    )  # fmt: skip
                except _Refused as exc:
                    name = redactor.text(span.name, limit=100)
                    out.rejected.append(f"span {span.span_id.hex() or '?'} ({name!r}) {exc}")
    return out


def _map_span(
    span: Any, resource: Mapping[str, Any], service: str | None, principal: Principal,
    pricing: PricingTable, redactors: tuple[Redactor, AttributeRedactor], check: _TimeCheck,
    out: MappedBatch, memo: _Memo,
) -> None:  # fmt: skip
    redactor, store_redactor = redactors
    raw_trace, raw_span, raw_parent = span.trace_id, span.span_id, span.parent_span_id
    if len(raw_trace) != 16 or raw_trace == _ZERO_TRACE:
        raise _Refused("has no valid trace_id (16 bytes, not all zero)")
    if len(raw_span) != 8 or raw_span == _ZERO_SPAN:
        raise _Refused("has no valid span_id (8 bytes, not all zero)")
    start_nanos, end_nanos = span.start_time_unix_nano, span.end_time_unix_nano
    if end_nanos == 0 or start_nanos == 0:
        raise _Refused("has no start or end time")
    trace_id, span_id = raw_trace.hex(), raw_span.hex()
    parent = raw_parent.hex() if raw_parent and raw_parent.strip(b"\0") else None
    own = attributes(span.attributes)
    attrs = {**resource, **own}
    ctx = _context_of(attrs, principal, trace_id, service, memo)
    start, end = _time(start_nanos), _time(max(start_nanos, end_nanos))
    check(start, "starts")
    check(end, "ends")
    events: list[dict[str, Any]] = []
    found = _model_call(attrs, ctx, pricing, (trace_id, span_id), (start, end), out, memo)
    unpriced = False
    if found is not None:
        event, unpriced = found
        events.append(event)
    status = _STATUSES[span.status.code] if 0 <= span.status.code < 3 else "unset"
    if ctx.derived_run and parent is None:
        events.insert(0, _envelope(ctx, "run_started", trace_id, span_id, start))
        if status == "error":
            done = _envelope(ctx, "run_failed", trace_id, span_id, end)
            reason = " ".join((span.status.message or f"span {span.name} failed").split())
            done["payload"] = {"reason": reason[:500] or "span status ERROR"}
        else:
            done = _envelope(ctx, "run_finished", trace_id, span_id, end)
        events.append(done)
    stored = store_redactor(own)
    if found is not None:
        stored["runledger.cost_usd"] = float(found[0]["cost_usd"])
    row = SpanRow(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, run_id=ctx.run,
        tenant_id=ctx.tenant, name=redactor.text(span.name, limit=500) or "(unnamed)",
        started_at=start, duration_ms=(end - start).total_seconds() * 1000.0,
        kind=_KINDS[span.kind] if 0 <= span.kind < len(_KINDS) else "unspecified",
        status=status, service=redactor.text(service, limit=200) if service else None,
        unpriced=unpriced, attributes=stored,
    )  # fmt: skip
    out.spans.append(row)
    out.model_call_spans.append(found is not None)
    index = len(out.spans) - 1
    out.events.extend(events)
    out.event_span.extend([index] * len(events))


# --- validation of the mapped events ------------------------------------------------------

_VARYING = frozenset({
    "event_id", "occurred_at", "trace_id", "span_id", "tenant_id", "project_id", "run_id",
    "tokens_in", "tokens_out", "cost_usd", "payload",
})  # fmt: skip
"""Fields of a ``model_call`` event that change from span to span (checked by hand)."""
_SAME = ("type", "phase", "role", "model")
"""The other fields the mapping writes: the events sharing them share one validation."""
_PAYLOAD_VARYING = frozenset(
    {"cached_tokens_in", "cache_write_tokens_in", "reasoning_tokens", "duration_ms"}
)
_PAYLOAD_SAME = ("source", "operation", "provider", "request_model", "response_model", "unpriced")
_TOKEN_FIELDS = ("tokens_in", "tokens_out")
_IDENT_FIELDS = ("tenant_id", "project_id", "run_id")
_MAX_TOKENS = 2**31 - 1
_MAX_USD = Decimal(10) ** 11  # Usd: at most 20 digits, 9 of them after the point
_SHAPES: dict[tuple[tuple[str, ...], tuple[str, ...]], bool] = {}
"""For each (event keys, payload keys) seen: True when every key is one of those above."""


def _known_shape(shape: tuple[tuple[str, ...], tuple[str, ...]]) -> bool:
    known = _SHAPES.get(shape)
    if known is None:
        keys, payload_keys = shape
        known = _VARYING.union(_SAME).issuperset(keys) and _PAYLOAD_VARYING.union(
            _PAYLOAD_SAME
        ).issuperset(payload_keys)
        if len(_SHAPES) < 64:
            _SHAPES[shape] = known
    return known


def validate_events(events: list[dict[str, Any]]) -> tuple[list[Any], bool] | None:
    """Validate the events ``map_request`` made; return the models and whether none changed.

    Every event goes through the event models' validation (redaction of free text included)
    except a ``model_call`` event whose other fields (context, model, provider, operation,
    phase, role: the free text the client chose) equal those of one validated before in this
    batch: that one is a copy of the validated event with its own ids, time, context ids,
    token counts and cost, which the mapping made (event, trace and span ids, time) or which
    are checked here as the models would (tenant, project and run ids: the models' pattern;
    tokens: integers 0 to 2**31-1; cost: zero or more, 9 decimals, under 1e11).

    Returns None when any event is invalid, or a value is out of the models' bounds: the
    caller validates again one event at a time, which names each problem. The bool is True
    when redaction changed no text, so the events' JSON may be stored as it is.
    """
    context: dict[str, bool] = {}
    validated: dict[tuple[Any, ...], Any] = {}
    models: list[Any] = []
    for event in events:
        key = None
        if event.get("type") == "model_call" and type(event.get("payload")) is dict:
            payload = event["payload"]
            shape = (tuple(event), tuple(payload))
            if _known_shape(shape):
                key = (
                    shape,
                    tuple(map(event.get, _SAME)),
                    tuple(map(payload.get, _PAYLOAD_SAME)),
                )
                template = validated.get(key)
                if template is not None:
                    model = _copy(template, event, payload)
                    if model is None:
                        return None
                    models.append(model)
                    continue
        kind = EVENT_MODELS.get(event.get("type"))  # type: ignore[arg-type]
        if kind is None:
            return None
        try:
            model = kind.model_validate_json(orjson.dumps(event), context=context)
        except ValidationError:
            return None
        if key is not None:
            validated[key] = model
        models.append(model)
    return models, not context


def _copy(template: Any, event: dict[str, Any], payload: dict[str, Any]) -> Any:
    """Return ``template`` with the varying fields of ``event``, or None if one is invalid."""
    changes: dict[str, Any] = {}
    for name in _IDENT_FIELDS:
        text = event[name]
        if type(text) is not str or _IDENT.fullmatch(text) is None:
            return None
        changes[name] = text
    for name in _TOKEN_FIELDS:
        n = event[name]
        if type(n) is not int or not 0 <= n <= _MAX_TOKENS:
            return None
        changes[name] = n
    inner: dict[str, Any] = {}
    for name in _PAYLOAD_VARYING.intersection(payload):
        n = payload[name]
        if name == "duration_ms":
            if type(n) is not float or not n >= 0.0 or n == float("inf"):
                return None
        elif type(n) is not int or not 0 <= n <= _MAX_TOKENS:
            return None
        inner[name] = n
    try:
        cost = Decimal(event["cost_usd"])
    except (InvalidOperation, TypeError):
        return None
    exponent = cost.as_tuple().exponent
    if not (cost.is_finite() and 0 <= cost < _MAX_USD and isinstance(exponent, int)):
        return None
    if exponent < -9:
        return None
    try:
        changes.update(
            event_id=uuid.UUID(event["event_id"]),
            occurred_at=datetime.fromisoformat(event["occurred_at"]),
            trace_id=event["trace_id"], span_id=event["span_id"], cost_usd=cost,
            payload=_replaced(template.payload, inner),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError):
        return None
    return _replaced(template, changes)


def _replaced(model: Any, changes: dict[str, Any]) -> Any:
    """``model.model_copy(update=changes)``, for models without private attributes.

    What ``model_copy`` does, without its generic steps (it runs twice for every span).
    """
    if getattr(model, "__pydantic_private__", None) is not None:
        return model.model_copy(update=changes)
    cls: Any = type(model)
    new = cls.__new__(cls)
    extra = model.__pydantic_extra__
    object.__setattr__(new, "__dict__", {**model.__dict__, **changes})
    object.__setattr__(new, "__pydantic_extra__", dict(extra) if extra is not None else None)
    object.__setattr__(
        new, "__pydantic_fields_set__", model.__pydantic_fields_set__ | changes.keys()
    )
    object.__setattr__(new, "__pydantic_private__", None)
    return new
