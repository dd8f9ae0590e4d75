"""The event spec: every pipeline event runledger accepts, as pydantic models.

The models are the single source of truth: ``docs/events.md`` describes them and
``events.schema.json`` (checked in beside this module) is generated from them with
``runledger schema``. A test fails when the checked-in schema is stale.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, Self, Union
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from runledger.money import Usd
from runledger.redact import default_redactor, safe_city
from runledger.validation import FieldError, field_errors

__all__ = [
    "EVENT_TYPES",
    "MAX_BATCH_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "MAX_SNAPSHOT_CHARS",
    "PII_KEYS",
    "SNAPSHOT_MEDIA_TYPES",
    "SPEC_EVENT_TYPES",
    "Event",
    "ParsedBatch",
    "Timestamp",
    "event_json_schema",
    "events_array",
    "events_to_json",
    "has_submicrosecond_times",
    "parse_batch_json",
    "validate_batch",
]

MAX_BATCH_EVENTS = 1000
"""Largest number of events one ``POST /v1/events`` may carry."""

MAX_PAYLOAD_BYTES = 16 * 1024
"""Largest serialised ``payload`` object, in bytes."""

MAX_SNAPSHOT_CHARS = 131_072
"""Longest artifact content (``run.artifact_written(..., content=)``) the ledger stores, after
redaction; longer content is refused, not cut (a cut document loses the structure the
Validator and the drift check read)."""

SNAPSHOT_MEDIA_TYPES = ("text/html", "text/markdown", "application/json", "text/plain")
"""Media types of artifact contents the ledger stores."""

MAX_PAYLOAD_DEPTH = 32
"""Deepest nesting of objects and arrays in a ``payload`` (the payload itself is level 1)."""

PII_KEYS = frozenset(
    {
        "email", "e_mail", "mail", "email_address",
        "phone", "phone_number", "telephone", "mobile",
        "name", "full_name", "first_name", "last_name", "given_name", "family_name",
        "address", "street", "street_address", "postcode", "zip", "zip_code",
        "lat", "lon", "lng", "latitude", "longitude", "coordinates", "geo",
        "ip", "ip_address", "ssn", "date_of_birth", "dob", "birthdate",
        "credit_card", "card_number", "iban",
    }
)  # fmt: skip
"""Payload keys refused anywhere in a payload: events must never carry PII."""

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_EMAIL_BYTES_RE = re.compile(_EMAIL_RE.pattern.encode())
_KEY_STRIP_RE = re.compile(r"[^a-z0-9]")
# Keys are compared with case and punctuation dropped: "firstName", "first-name" and
# "FIRST_NAME" all match "first_name".
_PII_COMPACT = frozenset(k.replace("_", "") for k in PII_KEYS)


_REDACTOR = default_redactor()
_REDACTED = "redacted"
"""Key of the validation context set when redaction changed a text of the events."""


def _note_redacted(info: ValidationInfo) -> None:
    if info.context is not None:
        info.context[_REDACTED] = True


def _redacted(limit: int) -> AfterValidator:
    """Redact a free-text field after its other checks, cut to ``limit`` after redaction."""

    def clean(text: str, info: ValidationInfo) -> str:
        out = _REDACTOR.text(text, limit=limit)
        if out != text:
            _note_redacted(info)
        return out

    return AfterValidator(clean)


def _city(text: str, info: ValidationInfo) -> str:
    out = safe_city(text)
    if out != text:
        _note_redacted(info)
    return out


def _not_zero(value: str) -> str:
    if not value.strip("0"):
        raise ValueError(
            "is all zeros, which is not a valid W3C id; send the real id or leave the field out"
        )
    return value


_NOT_ZERO_SCHEMA = {"not": {"pattern": "^0+$"}}

IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
Ident = Annotated[str, StringConstraints(pattern=IDENT_PATTERN)]
"""Tenant, project and run identifiers: 1-128 of letters, digits and ``. _ : -``."""

Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", to_lower=True),
]
"""Phase, role and playbook names; stored lower-case because they become metric labels."""

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")]
TraceId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{32}$"),
    AfterValidator(_not_zero),
    Field(json_schema_extra=_NOT_ZERO_SCHEMA),
]
"""A W3C trace id: 32 lower-case hex digits, not all zeros."""
SpanId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{16}$"),
    AfterValidator(_not_zero),
    Field(json_schema_extra=_NOT_ZERO_SCHEMA),
]
"""A W3C span id: 16 lower-case hex digits, not all zeros."""
Tokens = Annotated[int, Field(ge=0, le=2**31 - 1)]
OneLine = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, pattern=r"^[^\r\n\x00]*$"),
    _redacted(500),
]
"""Free text on one line, redacted on arrival (docs/redaction.md)."""
ShortText = Annotated[str, StringConstraints(max_length=128), _redacted(128)]
"""Free text of up to 128 characters, redacted on arrival."""
ArtifactPath = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[^\x00]+$"), _redacted(512)
]
ArtifactVersion = Annotated[int, Field(ge=1, le=2**31 - 1)]


# --- times: one rule for every time the ledger stores -------------------------------------

_MAX_UTC_OFFSET = timedelta(hours=16)
"""PostgreSQL refuses a UTC offset of 16 hours or more (``+16:00``), so runledger does too."""

_PARSED_UTC = TypeAdapter(AwareDatetime).validate_json(b'"2000-01-01T00:00:00Z"').tzinfo
"""The tzinfo pydantic-core gives every time it parses in UTC (one shared object)."""


def _ledger_time(value: datetime) -> datetime:
    if value.tzinfo is not _PARSED_UTC:  # UTC, the common time, needs no offset check
        offset = value.utcoffset()
        if offset is not None and not -_MAX_UTC_OFFSET < offset < _MAX_UTC_OFFSET:
            raise ValueError("must have a UTC offset between -15:59 and +15:59")
    if value.year in (1, 9999):  # only these years can leave Python's range once in UTC
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must be between the years 1 and 9999 in UTC") from None
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_ledger_time)]
"""A time with a UTC offset, as the ledger stores it.

Fractions of a second beyond the microsecond (Go's RFC 3339 nanoseconds) are truncated, the
one rule for every path: pydantic's parser truncates, and ingest never lets PostgreSQL read
(and round) such a time itself (see :func:`has_submicrosecond_times`). Offsets PostgreSQL
refuses, and times outside the years 1-9999 in UTC, are refused here.
"""

_SUBMICROSECOND_RE = re.compile(rb"\.[0-9]{7}[0-9]*[Zz+-]")
"""Seven fraction digits or more, then a UTC offset: a time no other JSON value reads as (a
dollar amount's digits end at its quote). The literal first makes it a fast scan: a body
holds a few dots an event, against some twenty colons."""


def has_submicrosecond_times(body: bytes) -> bool:
    """Return True when ``body`` (JSON) may hold a time with more than 6 fractional digits.

    PostgreSQL rounds such a time to the microsecond where :data:`Timestamp` truncates it, so
    a body for which this is True is never handed to PostgreSQL to read: ingest sends the
    validated models instead.
    """
    return _SUBMICROSECOND_RE.search(body) is not None


_BODY_RE = re.compile(
    rb"[ \t\n\r]*\{[ \t\n\r]*\"events\"[ \t\n\r]*:[ \t\n\r]*(\[.*\])[ \t\n\r]*\}[ \t\n\r]*", re.S
)


def events_array(body: bytes) -> bytes:
    """Return the ``[...]`` of a body ``{"events": [...]}``, or the body when it is not that.

    PostgreSQL then reads the batch once, instead of reading the object and then its
    member. Should the slice not be one JSON array (a member after the array), PostgreSQL
    refuses it as JSON, and ingest sends the validated events instead.
    """
    found = _BODY_RE.fullmatch(body)
    return found[1] if found else body


def _required_payload() -> Any:
    # Validating the empty default makes a missing payload report its missing keys by name.
    return Field(default_factory=dict, validate_default=True)


def _check_payload(value: dict[Any, Any]) -> None:
    """Refuse a payload the ledger could not store, or one that carries personal data."""
    text = _storable_json(value)
    if len(text) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    if b"\\u0000" in text:
        raise ValueError("payload contains a NUL character, which cannot be stored")
    if not _pii_key_free(value, text):
        path, key = next((p, k) for p, k, _ in _walk(value, "payload") if k and _is_pii(k))
        raise ValueError(f"{path} is personal data ({key!r}); events must not carry PII")
    if b"@" in text and _EMAIL_BYTES_RE.search(text):
        path = next(
            (
                p
                for p, k, v in _walk(value, "payload")
                if (isinstance(v, str) and _EMAIL_RE.search(v)) or (k and _EMAIL_RE.search(k))
            ),
            "payload",  # the JSON text holds one where no single key or text does
        )
        raise ValueError(f"{path} contains an email address; events must not carry PII")


_FLAT_KEYS: set[str] = set()
"""Keys of flat payloads that passed every check and redaction unchanged while holding only
numbers, booleans and nulls (bounded; shared by all threads)."""
_FLAT_MAX_KEYS = 16
"""A flat payload of more keys always takes the full checks (so its size stays far below
``MAX_PAYLOAD_BYTES``: 16 keys of at most 64 characters and 64-bit numbers)."""
_FLAT_TYPES = frozenset({float, bool, type(None)})


def _numbers_only(value: dict[str, Any]) -> bool:
    """Return True when every value is a number orjson stores, a boolean or null."""
    for item in value.values():
        kind = type(item)
        if kind is int:
            if not -(2**63) <= item < 2**64:
                return False
        elif kind not in _FLAT_TYPES:
            return False
    return True


def _plain_payload(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Check a plain-mapping payload and redact it whole.

    Most payloads are a few numbers under keys seen before (``{"bytes": 51234, "words": 400}``).
    Every check depends on the keys only, once the values are numbers: such a payload whose
    keys all passed before, with numbers, passes again unchanged, and is answered by one set
    comparison and a look at each value.
    """
    if not value:
        return value
    flat = len(value) <= _FLAT_MAX_KEYS and _numbers_only(value)
    if flat and _FLAT_KEYS.issuperset(value):
        return value
    _check_payload(value)
    clean = _REDACTOR.value(value)
    if clean != value:
        _note_redacted(info)
        return clean
    if flat and len(_FLAT_KEYS) < 4096 and all(len(k) <= _CACHED_KEY_LEN for k in value):
        _FLAT_KEYS.update(value)
    return value


PlainPayload = Annotated[dict[str, Any], AfterValidator(_plain_payload)]
"""The payload of an event without a typed one: checked after pydantic-core has read it
(an after-validator: a before-validator would make pydantic-core build the mapping once
for the check and again for the field)."""


class _Payload(BaseModel):
    """Payload base: typed keys where a type needs them, any other keys allowed.

    The whole payload is checked as sent (``_check_payload``), before its fields. The other
    keys are redacted on arrival like the typed free text: every string, every key, and
    values under keys that name a secret (``Redactor.value``).
    """

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, dict) and value:
            _check_payload(value)
        return value

    @model_validator(mode="after")
    def _redact_extra(self, info: ValidationInfo) -> Self:
        extra = self.__pydantic_extra__
        if extra:
            clean = _REDACTOR.value(extra)
            if clean != extra:
                self.__pydantic_extra__ = clean
                _note_redacted(info)
        return self


class _Envelope(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    event_id: UUID = Field(description="Client-generated UUID; the idempotency key.")
    tenant_id: Ident
    project_id: Ident
    run_id: Ident
    phase: Slug
    role: Slug = Field(
        description="Agent role, e.g. coordinator, implementer, validator, publisher."
    )
    occurred_at: Timestamp = Field(
        description="When it happened, with a UTC offset (-15:59 to +15:59); fractions"
        " of a second beyond the microsecond are truncated."
    )
    tokens_in: Tokens = 0
    tokens_out: Tokens = 0
    cost_usd: Usd = Decimal(0)
    model: ModelName | None = None
    cached: bool = Field(False, description="True when the tokens were served from a cache.")
    artifact_path: ArtifactPath | None = None
    artifact_version: ArtifactVersion | None = None
    playbook: Slug | None = None
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    payload: PlainPayload = Field(default_factory=dict)


def _storable_json(value: dict[Any, Any]) -> bytes:
    """Return ``value`` as JSON, or raise ValueError when the ledger could not store it."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        _check_depth(value)  # orjson stops at 255 levels
        if "64-bit" in str(exc):
            raise ValueError("payload holds an integer outside the 64-bit range") from None
        raise ValueError(f"payload cannot be stored as JSON: {exc}") from None
    # Only a payload with more brackets than the limit can nest deeper than it.
    if text.count(b"{") + text.count(b"[") > MAX_PAYLOAD_DEPTH:
        _check_depth(value)
    return text


def _check_depth(value: Any) -> None:
    """Refuse a payload whose objects and arrays nest deeper than MAX_PAYLOAD_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    if deepest > MAX_PAYLOAD_DEPTH:
        raise ValueError(
            f"payload is nested {deepest} levels deep; the limit is {MAX_PAYLOAD_DEPTH}"
        )


_CACHED_KEY_LEN = 64
"""Longer keys are never cached, so the caches stay small whatever clients send."""


def _names_pii(key: str) -> bool:
    return _KEY_STRIP_RE.sub("", key.lower()) in _PII_COMPACT


# Payloads repeat a handful of keys, and this runs for every key of every event.
_names_pii_cached = functools.lru_cache(maxsize=4096)(_names_pii)


def _is_pii(key: str) -> bool:
    return _names_pii_cached(key) if len(key) <= _CACHED_KEY_LEN else _names_pii(key)


_SAFE_KEYS: set[str] = set()
"""Payload keys already seen not to name personal data (bounded; shared by all threads)."""


def _pii_key_free(value: dict[Any, Any], text: bytes) -> bool:
    """Return True when no key of ``value`` (``text`` is its JSON) names personal data.

    Runs for every event: a flat payload (one object, no array; any ``{`` or ``[`` inside a
    string only costs the full walk) whose keys were all seen before is answered by one set
    comparison.
    """
    flat = text.count(b"{") == 1 and b"[" not in text
    if flat and _SAFE_KEYS.issuperset(value):
        return True
    if _has_pii_key(value):
        return False
    if len(_SAFE_KEYS) < 4096:
        _SAFE_KEYS.update(k for k in value if isinstance(k, str) and len(k) <= _CACHED_KEY_LEN)
    return True


def _has_pii_key(value: Any) -> bool:
    """Return True when any key at any depth names personal data (the common case is flat)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if _is_pii(str(key)):
                    return True
                if isinstance(child, (dict, list)):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(c for c in item if isinstance(c, (dict, list)))
    return False


def _walk(value: Any, path: str, key: str | None = None) -> Iterator[tuple[str, str | None, Any]]:
    yield path, key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}", str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


# --- spec events ---------------------------------------------------------------------------


class RunStartedPayload(_Payload):
    uncapped: bool | None = None
    """True when the SDK did not enforce the tenant daily cap on the run's spend."""


class RunStarted(_Envelope):
    """A run began work (after any queueing)."""

    type: Literal["run_started"]
    payload: RunStartedPayload = Field(default_factory=RunStartedPayload)  # type: ignore[assignment]
    attempt: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="1 for the first try of this phase's step, 2 for the first retry, ..."
    )


class RunFinishedPayload(_Payload):
    status: Literal["succeeded", "partial"] = "succeeded"
    summary: OneLine | None = None


class RunFinished(_Envelope):
    """A run ended; ``payload.status`` is ``partial`` when a cap short-circuited it."""

    type: Literal["run_finished"]
    payload: RunFinishedPayload = Field(default_factory=RunFinishedPayload)  # type: ignore[assignment]


class RunFailedPayload(_Payload):
    reason: OneLine
    error_class: ShortText | None = None
    retryable: bool | None = None


class RunFailed(_Envelope):
    """A run ended in failure; ``payload.reason`` is the one-line cause."""

    type: Literal["run_failed"]
    payload: RunFailedPayload = _required_payload()  # type: ignore[assignment]


class PhaseEntered(_Envelope):
    """The project entered ``phase``."""

    type: Literal["phase_entered"]


class PhaseAdvancedPayload(_Payload):
    to_phase: Slug | None = None


class PhaseAdvanced(_Envelope):
    """``phase`` passed its gate; ``payload.to_phase`` names the next phase, if any."""

    type: Literal["phase_advanced"]
    payload: PhaseAdvancedPayload = Field(default_factory=PhaseAdvancedPayload)  # type: ignore[assignment]


class ArtifactWritten(_Envelope):
    """An artifact version was written; needs ``artifact_path`` and ``artifact_version``."""

    type: Literal["artifact_written"]
    artifact_path: ArtifactPath
    artifact_version: ArtifactVersion


class ValidationFailedPayload(_Payload):
    reason: OneLine
    rule: ShortText | None = None
    strict: bool = False


class ValidationFailed(_Envelope):
    """The Validator rejected an artifact; ``payload.reason`` says why."""

    type: Literal["validation_failed"]
    payload: ValidationFailedPayload = _required_payload()  # type: ignore[assignment]


class PublishDonePayload(_Payload):
    partial: bool = False
    instructions: OneLine | None = None


class PublishDone(_Envelope):
    """The Publisher shipped an artifact (``payload.partial`` when a cap cut it short)."""

    type: Literal["publish_done"]
    artifact_path: ArtifactPath
    artifact_version: ArtifactVersion
    payload: PublishDonePayload = Field(default_factory=PublishDonePayload)  # type: ignore[assignment]


class CapHitPayload(_Payload):
    cap: Literal["time", "tokens", "cost", "external", "tenant_daily", "publish"]
    limit: Annotated[Decimal, Field(ge=0)]
    spent: Annotated[Decimal, Field(ge=0)]


class CapHit(_Envelope):
    """A cap stopped further spend; ``payload.cap`` names which."""

    type: Literal["cap_hit"]
    payload: CapHitPayload = _required_payload()  # type: ignore[assignment]


class UserOverridePayload(_Payload):
    action: OneLine
    actor: Ident | None = Field(None, description="Opaque user id; never an email or name.")


class UserOverride(_Envelope):
    """A human intervened in the run (approve, edit, force-advance, ...)."""

    type: Literal["user_override"]
    payload: UserOverridePayload = _required_payload()  # type: ignore[assignment]


class ImpersonationPayload(_Payload):
    actor: Ident = Field(description="Opaque id of the support/admin user impersonating.")
    reason: OneLine | None = None


class ImpersonationStarted(_Envelope):
    """Support or an admin began acting as the tenant's user."""

    type: Literal["impersonation_started"]
    payload: ImpersonationPayload = _required_payload()  # type: ignore[assignment]


class ImpersonationEnded(_Envelope):
    """Impersonation ended."""

    type: Literal["impersonation_ended"]
    payload: ImpersonationPayload = _required_payload()  # type: ignore[assignment]


# --- extension events (facts the spec's metrics need) -------------------------------------


class RunQueued(_Envelope):
    """Work for the run was enqueued; queue latency runs from here to ``run_started``."""

    type: Literal["run_queued"]
    attempt: Annotated[int, Field(ge=1, le=1000)] = 1


class ProofRequestedPayload(_Payload):
    proof_id: Ident
    due_at: Timestamp


class ProofRequested(_Envelope):
    """A proof was sent to the owner for approval, due by ``payload.due_at``."""

    type: Literal["proof_requested"]
    payload: ProofRequestedPayload = _required_payload()  # type: ignore[assignment]


class ProofCompletedPayload(_Payload):
    proof_id: Ident
    approved: bool = True


class ProofCompleted(_Envelope):
    """The owner answered a proof."""

    type: Literal["proof_completed"]
    payload: ProofCompletedPayload = _required_payload()  # type: ignore[assignment]


class MicrositePayload(_Payload):
    microsite_id: Ident
    visitor: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16,64}$")] | None = Field(
        None, description="Salted hash of the visitor; never a raw identifier."
    )


class MicrositeVisit(_Envelope):
    """A visit to a published microsite."""

    type: Literal["microsite_visit"]
    payload: MicrositePayload = _required_payload()  # type: ignore[assignment]


class MicrositeConversion(_Envelope):
    """A microsite visit converted (sign-up, booking, purchase)."""

    type: Literal["microsite_conversion"]
    payload: MicrositePayload = _required_payload()  # type: ignore[assignment]


class DemoPayload(_Payload):
    demo_id: Ident
    city: (
        Annotated[str, StringConstraints(min_length=1, max_length=80), AfterValidator(_city)] | None
    ) = Field(
        None,
        description="Uber Mode location, aggregated to the city; never coordinates. A city "
        "missing from runledger/data/cities.csv (an address, a venue) is stored as "
        "[REDACTED:city].",
    )


class DemoStarted(_Envelope):
    """An Uber Mode demo started."""

    type: Literal["demo_started"]
    payload: DemoPayload = _required_payload()  # type: ignore[assignment]


class DemoCompleted(_Envelope):
    """An Uber Mode demo ran to its end."""

    type: Literal["demo_completed"]
    payload: DemoPayload = _required_payload()  # type: ignore[assignment]


class ExternalCallPayload(_Payload):
    service: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
    summary: OneLine
    status: Literal["ok", "error"] = "ok"
    duration_ms: Annotated[float, Field(ge=0)] | None = None


class ExternalCall(_Envelope):
    """A non-model call (HTTP API, tool, webhook); ``cost_usd`` is its charge."""

    type: Literal["external_call"]
    payload: ExternalCallPayload = _required_payload()  # type: ignore[assignment]


class ModelCallPayload(_Payload):
    source: Literal["otlp"] = Field(
        "otlp", description="Where the call was reported from: an OTLP span (POST /v1/traces)."
    )
    operation: ShortText | None = None
    provider: ShortText | None = None
    request_model: ShortText | None = None
    response_model: ShortText | None = None
    cached_tokens_in: Tokens = 0
    cache_write_tokens_in: Tokens = 0
    reasoning_tokens: Tokens = 0
    duration_ms: Annotated[float, Field(ge=0)] | None = None
    unpriced: bool = Field(
        False,
        description="True when the model has no price: the call is stored with cost_usd 0 "
        "and counted as unpriced, never costed silently.",
    )


class ModelCall(_Envelope):
    """A model call reported as an OpenTelemetry GenAI span (docs/otlp.md)."""

    type: Literal["model_call"]
    payload: ModelCallPayload = Field(default_factory=ModelCallPayload)  # type: ignore[assignment,arg-type]


_SPEC_MODELS: tuple[type[_Envelope], ...] = (
    PhaseEntered, ArtifactWritten, ValidationFailed, PhaseAdvanced, PublishDone,
    RunStarted, RunFinished, RunFailed, CapHit, UserOverride,
    ImpersonationStarted, ImpersonationEnded,
)  # fmt: skip
_EXTENSION_MODELS: tuple[type[_Envelope], ...] = (
    RunQueued, ProofRequested, ProofCompleted, MicrositeVisit, MicrositeConversion,
    DemoStarted, DemoCompleted, ExternalCall, ModelCall,
)  # fmt: skip


def _type_name(model: type[_Envelope]) -> str:
    return str(model.model_fields["type"].annotation.__args__[0])  # type: ignore[union-attr]


SPEC_EVENT_TYPES = tuple(_type_name(m) for m in _SPEC_MODELS)
EVENT_TYPES = SPEC_EVENT_TYPES + tuple(_type_name(m) for m in _EXTENSION_MODELS)
EVENT_MODELS: dict[str, type[_Envelope]] = {
    _type_name(m): m for m in _SPEC_MODELS + _EXTENSION_MODELS
}

Event = Annotated[
    Union[  # noqa: UP007 - a discriminated union needs the Union form for pydantic's schema
        RunStarted, RunFinished, RunFailed, PhaseEntered, PhaseAdvanced, ArtifactWritten,
        ValidationFailed, PublishDone, CapHit, UserOverride, ImpersonationStarted,
        ImpersonationEnded, RunQueued, ProofRequested, ProofCompleted, MicrositeVisit,
        MicrositeConversion, DemoStarted, DemoCompleted, ExternalCall, ModelCall,
    ],
    Field(discriminator="type"),
]  # fmt: skip

_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
_BATCH_ADAPTER: TypeAdapter[Any] = TypeAdapter(list[Event])


class _Body(BaseModel):
    """A whole ``POST /v1/events`` body, for the fast path that parses and validates at once."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class ParsedBatch(NamedTuple):
    """The events of a valid ``POST /v1/events`` body."""

    events: list[Any]
    as_sent: bool
    """True when the body holds the events as validated: redaction changed no text, so
    the body may be stored as it is."""


def parse_batch_json(body: bytes) -> ParsedBatch | None:
    """Return the events of a well-formed body whose every event is valid, else None.

    pydantic-core parses the JSON straight into models (no intermediate dictionaries), and
    free-text fields are redacted on the way. Any problem returns None: the caller then takes
    the slow path, which names each problem.
    """
    context: dict[str, bool] = {}
    try:
        events = _Body.model_validate_json(body, context=context).events
    except ValidationError:
        return None
    return ParsedBatch(events, not context)


"""One problem with one event: the field it concerns and what is wrong."""

_UNKNOWN_TYPE = "unknown event type; expected one of: " + ", ".join(EVENT_TYPES)


def _event_errors(exc: ValidationError, tag: str | None) -> list[FieldError]:
    """Name each problem of one event by its field, the union's tag left out of the path."""
    kind = exc.errors(include_url=False, include_input=False)[0]["type"]
    if kind == "union_tag_invalid":
        return [FieldError("type", _UNKNOWN_TYPE)]
    if kind == "union_tag_not_found":
        return [FieldError("type", "is required")]
    errors = field_errors(exc, skip=lambda loc: 1 if loc and loc[0] == tag else 0)
    return [e if e.field else FieldError("(event)", e.message) for e in errors]


def validate_batch(raw: list[Any]) -> list[_Envelope | list[FieldError]]:
    """Validate a list of decoded events; each slot holds the model or that event's errors.

    Free-text fields of the models are redacted.
    """
    try:
        return list(_BATCH_ADAPTER.validate_python(raw))
    except ValidationError:
        pass  # fall back to one event at a time so each error lands on its own event
    results: list[_Envelope | list[FieldError]] = []
    for item in raw:
        if not isinstance(item, dict):
            results.append([FieldError("(event)", "must be a JSON object")])
            continue
        try:
            results.append(_EVENT_ADAPTER.validate_python(item))
        except ValidationError as exc:
            tag = item.get("type") if isinstance(item.get("type"), str) else None
            results.append(_event_errors(exc, tag))
    return results


def events_to_json(events: list[Any]) -> bytes:
    """Serialise validated events as one JSON array (the form ``ingest_batch`` reads)."""
    return _BATCH_ADAPTER.dump_json(events, exclude_none=True)


def event_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of one event, as checked in at ``events.schema.json``."""
    schema = _EVENT_ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "runledger event"
    schema["description"] = (
        "One pipeline event as accepted by POST /v1/events. Generated from "
        "runledger.events by `runledger schema`; do not edit by hand."
    )
    return schema
