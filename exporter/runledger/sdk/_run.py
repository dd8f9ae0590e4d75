"""A run of an agent: its trace, its events, the usage of its calls and its cost controls."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from runledger.events import MAX_SNAPSHOT_CHARS, SNAPSHOT_MEDIA_TYPES
from runledger.money import usd
from runledger.redact import Redactor, nearest_city, safe_city
from runledger.sdk._calls import (
    CURRENT_RUN,
    CallingRun,
    ExternalCall,
    ModelCall,
    ModelRequest,
    one_line,
)
from runledger.sdk._costs import (
    CapStop,
    CostGuard,
    PartialResult,
    PublisherFrozen,
    RunCapReached,
    refresh,
    snapshot,
)
from runledger.sdk._services import FreezeCheckFailed, RunServices, Usage
from runledger.sdk._telemetry import in_context, with_trace_ids

if TYPE_CHECKING:
    from runledger.cost.policy import RunCaps
    from runledger.cost.retry import RetryPolicy

__all__ = ["Budget", "Run", "RunSpec", "current_run"]

T = TypeVar("T")

_ZERO = Decimal(0)
_USAGE_SERVICE = "runledger.usage"
"""``external_call`` service name of the event that carries model usage settled through a
budget lease the run no longer draws from (one event never mixes two leases)."""


def current_run() -> Run | None:
    """Return the run active in this context (``with ledger.run(...)``), if any."""
    return cast("Run | None", CURRENT_RUN.get())


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Which run this is: where it belongs, its id, playbook and attempt."""

    tenant_id: str
    project_id: str
    phase: str
    role: str
    run_id: str
    playbook: str | None = None
    attempt: int = 1


class Budget(Protocol):
    """Consulted around every model and external call of a run (``run.budget``).

    A hook for your own policies, after the SDK's caps (``caps=``, the tenant budget lease);
    a budget may raise from ``before_call`` to refuse a call.
    """

    def before_call(self, run: Run, kind: str, name: str) -> None:
        """Called before a ``model`` or ``external`` call named ``name`` starts."""

    def after_call(
        self, run: Run, kind: str, *, cost_usd: Decimal, tokens_in: int, tokens_out: int
    ) -> None:
        """Called after the call, with what it cost."""


class Run:
    """One run of an agent role in a project phase.

    Use ``with ledger.run(...) as run:`` or the explicit twin ``ledger.start_run(...)``
    with ``run.finish()`` / ``run.fail(reason)``. Token and cost deltas of model calls ride
    on the run's next event; ``run_finished`` or ``run_failed`` carries the rest.
    """

    def __init__(
        self,
        services: RunServices,
        spec: RunSpec,
        *,
        attributes: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
        caps: RunCaps | None = None,
    ) -> None:
        self.services = services
        """What the run uses of the Ledger that started it."""
        self.tenant_id = spec.tenant_id
        self.project_id = spec.project_id
        self.phase = spec.phase
        self.role = spec.role
        self.run_id = spec.run_id
        self.playbook = spec.playbook
        self.attempt = spec.attempt
        self.budget: Budget | None = budget
        """Your own hook, consulted before and after each model/external call."""
        self.caps: RunCaps | None = caps
        """The run's caps (tokens, wall time, model $, external $); None: no per-run limits."""
        self.costs: CostGuard | None = None
        """The run's cost controls while it runs with caps or a tenant budget lease."""
        self._stopped: PartialResult | None = None
        """Set when a Publisher freeze refused this run's publish."""
        self.status = "new"
        self.model_calls = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = _ZERO
        self.external_usd = _ZERO
        self.trace_id: str | None = None
        self._extra_attributes = dict(services.redactor.attributes(attributes or {}))
        self._lock = threading.RLock()
        self._pending = Usage()
        """Usage of model calls that the run's next event carries."""
        self._span: Any = None
        self.span_context: trace.SpanContext = trace.INVALID_SPAN_CONTEXT
        self.context: Context = Context()
        self._span_id: str | None = None
        self._cv_token: Token[CallingRun | None] | None = None
        self._otel_token: object | None = None
        self._previous: CallingRun | None = None
        self.envelope: dict[str, Any] = {}
        self.span_attributes: dict[str, Any] = {}
        self.log_attributes: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def _begin(self) -> None:
        if self.status != "new":
            raise RuntimeError(f"run {self.run_id} was already started")
        base = {
            "runledger.tenant_id": self.tenant_id,
            "runledger.project_id": self.project_id,
            "runledger.phase": self.phase,
            "runledger.role": self.role,
            "runledger.run_id": self.run_id,
        }
        if self.playbook:
            base["runledger.playbook"] = self.playbook
        redactor = self.services.redactor
        self.span_attributes = redactor.attributes(base)
        self.log_attributes = {**base, **self._extra_attributes}
        role = self.span_attributes["runledger.role"]
        current = trace.get_current_span().get_span_context()
        # One trace per run: the run's span is a new root, linked to whoever started it.
        span = self.services.tracer.start_span(
            f"invoke_agent {role}",
            context=Context(),
            kind=SpanKind.INTERNAL,
            attributes={
                **self.span_attributes,
                **self._extra_attributes,
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": role,
                "runledger.attempt": self.attempt,
            },
            links=[Link(current)] if current.is_valid else None,
        )
        # Real W3C ids even when no span is recorded (a no-op tracer): events and exemplars
        # carry them, and the run's calls share its trace id.
        self._span = with_trace_ids(span)
        self.span_context = self._span.get_span_context()
        self.context = trace.set_span_in_context(in_context(self._span, redactor), Context())
        self.trace_id = format(self.span_context.trace_id, "032x")
        self._span_id = format(self.span_context.span_id, "016x")
        self.envelope = {
            "tenant_id": self.tenant_id,
            "project_id": self.project_id,
            "run_id": self.run_id,
            "phase": self.phase,
            "role": self.role,
            "playbook": self.playbook,
            "trace_id": self.trace_id,
            "span_id": self._span_id,
        }
        lease = self.services.tenant_budget
        if self.caps is not None or lease is not None:
            try:
                # Raises TenantPaused for a paused tenant: the run is refused before it starts.
                budget = lease(self.tenant_id, self.run_id, self.role) if lease else None
            except BaseException:
                self._span.end()
                raise
            self.costs = CostGuard(self, self.caps, budget)
        self.services.opened(self)
        try:
            # A run that does not draw from its tenant's cap says so, for the exporter's count.
            uncapped = {"uncapped": True} if lease is None else None
            self._emit(
                "run_started", payload=uncapped, fields={"attempt": self.attempt}, open_run=True
            )
        except BaseException:
            self.services.closed(self)
            if self.costs is not None:
                self.costs.close()  # give the lease taken for this run back
            self._span.end()
            raise
        self.status = "running"

    def start(self) -> Run:
        """Start the run (the explicit twin of ``with``); it becomes the current run."""
        self._begin()
        self._previous = CURRENT_RUN.get()
        CURRENT_RUN.set(self)
        return self

    def finish(self, status: str = "succeeded", *, summary: str | None = None) -> None:
        """End the run: ``run_finished`` with ``status`` ``succeeded`` or ``partial``."""
        payload: dict[str, Any] = {"status": status}
        if summary:
            payload["summary"] = one_line(summary, self.services.redactor)
        self._end("run_finished", payload, status, None)

    def fail(self, reason: str | BaseException, *, retryable: bool | None = None) -> None:
        """End the run with ``run_failed``; ``reason`` is a message or the exception."""
        if isinstance(reason, BaseException):
            error_class: str | None = type(reason).__name__
            text = f"{error_class}: {reason}" if str(reason) else error_class
        else:
            error_class, text = None, reason
        redactor = self.services.redactor
        payload: dict[str, Any] = {"reason": one_line(text or "failed", redactor)}
        if error_class:
            payload["error_class"] = redactor.text(error_class, limit=128)
        if retryable is not None:
            payload["retryable"] = retryable
        self._end("run_failed", payload, "failed", payload["reason"])

    def partial(
        self,
        artifact_path: str | None = None,
        version: int | None = None,
        summary: str | None = None,
        *,
        missing: str | None = None,
        instructions: str | None = None,
    ) -> None:
        """End the run as ``partial`` with what it has: an artifact and a summary.

        The artifact is an ``artifact_written`` event (``payload.partial``); for the
        Publisher it is ``publish_done`` with ``payload.partial`` and ``instructions`` (by
        default: what is missing, which cap, and how to raise it). The summary of
        ``run_finished`` adds what is ``missing``, the spend and the cap that stopped the run.

        Usage::

            try:
                for section in sections:
                    with run.model_call("gpt-4.1", max_tokens=800) as call: ...
            except RunCapReached:
                run.partial("site/index.html", 2, "3 of 5 sections", missing="pricing, FAQ")
        """
        self._require_running()
        result = self.partial_result()
        if artifact_path is not None:
            if version is None:
                raise ValueError("partial(artifact_path, version): version is required")
            if self.role == "publisher":
                self.publish_done(
                    artifact_path, version, partial=True,
                    instructions=instructions or result.instructions(missing),
                )  # fmt: skip
            else:
                self.emit(
                    "artifact_written", payload={"partial": True}, artifact_path=artifact_path,
                    artifact_version=version,
                )  # fmt: skip
        redactor = self.services.redactor
        payload: dict[str, Any] = {
            "status": "partial",
            "summary": one_line(result.summary(summary, missing), redactor),
        }
        if result.cap:
            payload["cap"] = result.cap
        if missing:
            payload["missing"] = one_line(missing, redactor)
        self._end("run_finished", payload, "partial", None)

    @property
    def cap_reached(self) -> PartialResult | None:
        """Return the partial result of the cap that stopped this run, if one did."""
        return self.costs.reached if self.costs is not None else None

    def partial_result(self) -> PartialResult:
        """Return what the run has done and spent so far, and which cap stopped it if any."""
        costs = self.costs
        elapsed = costs.meter.elapsed_s if costs is not None else 0.0
        if self._stopped is not None:
            return refresh(self._stopped, self, elapsed)
        if costs is not None and costs.reached is not None:
            return refresh(costs.reached, self, elapsed)
        if costs is not None:
            return costs.snapshot()
        return snapshot(self, elapsed)

    def _end(self, kind: str, payload: dict[str, Any], status: str, error: str | None) -> None:
        with self._lock:
            if self.status != "running":
                raise RuntimeError(f"run {self.run_id} is not running (status {self.status})")
            self._emit(kind, payload=payload, close_run=True)
            self.status = status
        if self.costs is not None:
            self.costs.close()
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, self.services.redactor.text(error)))
        self._span.set_attributes(
            {
                "gen_ai.usage.input_tokens": self.tokens_in,
                "gen_ai.usage.output_tokens": self.tokens_out,
                "runledger.cost_usd": float(self.cost_usd),
                "runledger.status": status,
            }
        )
        self._span.end()
        self.services.closed(self)
        if CURRENT_RUN.get() is self and self._cv_token is None:
            CURRENT_RUN.set(self._previous)

    def __enter__(self) -> Run:
        self._begin()
        self._cv_token = CURRENT_RUN.set(self)
        self._otel_token = otel_context.attach(self.context)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)  # type: ignore[arg-type]
            self._otel_token = None
        if self._cv_token is not None:
            CURRENT_RUN.reset(self._cv_token)
            self._cv_token = None
        if self.status == "running":
            if isinstance(exc, RunCapReached):
                self.partial(summary="no partial artifact was written")
            elif exc is not None:
                self.fail(exc)
            else:
                self.finish()

    @contextmanager
    def activate(self) -> Iterator[Run]:
        """Make this run current in this thread or task (for logs and ``model_call``)."""
        token = CURRENT_RUN.set(self)
        otel_token = otel_context.attach(self.context)
        try:
            yield self
        finally:
            otel_context.detach(otel_token)
            CURRENT_RUN.reset(token)

    # -- events -----------------------------------------------------------------------------

    def _emit(
        self,
        kind: str,
        *,
        payload: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        usage: bool = True,
        open_run: bool = False,
        close_run: bool = False,
    ) -> str:
        event: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "type": kind,
            **self.envelope,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        current = trace.get_current_span().get_span_context()
        if current.is_valid and current.trace_id == self.span_context.trace_id:
            event["span_id"] = format(current.span_id, "016x")
        if fields:
            event.update(fields)
        if payload:
            event["payload"] = dict(payload)
        with self._lock:
            reset = False
            pending = self._pending
            if usage and pending:
                event["tokens_in"] = pending.tokens_in
                event["tokens_out"] = pending.tokens_out
                event["cost_usd"] = pending.cost_usd
                event["model"] = pending.model
                event["cached"] = pending.cached
                if pending.lease_id is not None and pending.cost_usd:
                    # The ledger nets this cost out of the cap once: it was settled on the lease.
                    event["payload"] = {**event.get("payload", {}), "lease_id": pending.lease_id}
                reset = True
            self.services.emit(
                event,
                open_run=(self.run_id, orjson.dumps(self.envelope)) if open_run else None,
                reset_run=self.run_id if reset and not close_run else None,
                close_run=self.run_id if close_run else None,
            )
            if reset:
                self._pending = Usage()
        return str(event["event_id"])

    def _require_running(self) -> None:
        if self.status != "running":
            raise RuntimeError(f"run {self.run_id} is not running (status {self.status})")

    def emit(
        self,
        event_type: str,
        *,
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        """Emit any event type of ``runledger.events`` in this run; return its event id."""
        self._require_running()
        return self._emit(event_type, payload=payload, fields=fields)

    def phase_entered(self, phase: str | None = None) -> str:
        """The project entered ``phase`` (default: the run's phase)."""
        if phase:
            return self.emit("phase_entered", phase=phase)
        return self.emit("phase_entered")

    def phase_advanced(self, to_phase: str | None = None) -> str:
        """The run's phase passed its gate; ``to_phase`` names the next one."""
        return self.emit("phase_advanced", payload={"to_phase": to_phase} if to_phase else None)

    def artifact_written(
        self,
        path: str,
        version: int,
        *,
        content: str | None = None,
        media_type: str | None = None,
    ) -> str:
        """An artifact version was written.

        With ``content`` (the artifact's text: HTML, Markdown, JSON or plain text, at most
        ``MAX_SNAPSHOT_CHARS`` characters) the ledger also stores it, redacted, for quality
        sampling and drift checks (docs/quality.md); ``media_type`` is guessed when omitted.
        """
        record = self._snapshot(path, version, content, media_type)
        event_id = self.emit("artifact_written", artifact_path=path, artifact_version=version)
        if record is not None and self.services.snapshot is not None:
            self.services.snapshot(record)
        return event_id

    def _snapshot(
        self, path: str, version: int, content: str | None, media_type: str | None
    ) -> dict[str, Any] | None:
        if content is None:
            return None
        if not isinstance(content, str):
            raise TypeError("artifact_written(content=...) must be a str")
        if media_type is not None and media_type not in SNAPSHOT_MEDIA_TYPES:
            raise ValueError(
                f"artifact_written(media_type={media_type!r}): expected one of "
                + ", ".join(SNAPSHOT_MEDIA_TYPES)
            )
        text = self.services.redactor.text(content)
        if len(text) > MAX_SNAPSHOT_CHARS:
            raise ValueError(
                f"artifact content is {len(text)} characters; the ledger stores at most "
                f"{MAX_SNAPSHOT_CHARS} per artifact version: send a smaller rendering (for "
                "example the page without inline assets) or leave content out"
            )
        record: dict[str, Any] = {
            "snapshot_id": str(uuid.uuid4()),
            "tenant_id": self.tenant_id,
            "project_id": self.project_id,
            "run_id": self.run_id,
            "phase": self.phase,
            "role": self.role,
            "artifact_path": self.services.redactor.text(path, limit=512),
            "artifact_version": version,
            "content": text,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if self.playbook:
            record["playbook"] = self.playbook
        if media_type:
            record["media_type"] = media_type
        return record

    def validation_failed(
        self,
        reason: str,
        *,
        rule: str | None = None,
        strict: bool = False,
        artifact_path: str | None = None,
        artifact_version: int | None = None,
    ) -> str:
        """The Validator rejected an artifact."""
        payload: dict[str, Any] = {
            "reason": one_line(reason, self.services.redactor),
            "strict": strict,
        }
        if rule:
            payload["rule"] = rule
        fields = {"artifact_path": artifact_path, "artifact_version": artifact_version}
        return self.emit(
            "validation_failed", payload=payload, **{k: v for k, v in fields.items() if v}
        )

    def publish_done(
        self, path: str, version: int, *, partial: bool = False, instructions: str | None = None
    ) -> str:
        """The Publisher shipped an artifact (``partial`` when a cap cut it short).

        Raises:
            PublisherFrozen: (a full publish of a Publisher run) quality sampling froze the
                run's playbook, or the ledger could not say; nothing was recorded as
                published. Publish partial instead: ``run.partial(path, version, ...)``.
        """
        if not partial:
            self._check_publish()
        payload: dict[str, Any] = {"partial": partial}
        if instructions:
            payload["instructions"] = one_line(instructions, self.services.redactor)
        return self.emit(
            "publish_done", payload=payload, artifact_path=path, artifact_version=version
        )

    def _check_publish(self) -> None:
        """Refuse a full publish while the playbook's Publisher is frozen (fail closed)."""
        gate = self.services.publish_gate
        if gate is None or not self.playbook or self.role.lower() != "publisher":
            return
        self._require_running()
        playbook = self.playbook
        try:
            freeze = gate(playbook)
        except FreezeCheckFailed as exc:
            freeze = None
            why = (
                f"could not check whether the Publisher of playbook {playbook} is frozen "
                f"({exc}); the Publisher fails closed"
            )
        else:
            if freeze is None:
                return
            why = (
                f"the Publisher of playbook {playbook} is frozen since "
                f"{freeze.get('frozen_at')} by {freeze.get('frozen_by')}: {freeze.get('reason')}"
            )
        limit = Decimal(str((freeze or {}).get("threshold") or 0))
        spent = Decimal(str((freeze or {}).get("failure_rate") or 0))
        costs = self.costs
        elapsed = costs.meter.elapsed_s if costs is not None else 0.0
        self._stopped = snapshot(self, elapsed, CapStop("publish", limit, spent, _ZERO, why))
        self.cap_hit("publish", limit=limit, spent=spent)
        self.log(f"publish refused: {why}", level=logging.WARNING)
        raise PublisherFrozen(self._stopped, dict(freeze) if freeze is not None else None)

    def cap_hit(self, cap: str, *, limit: Decimal | float, spent: Decimal | float) -> str:
        """A cap stopped further spend (``time``, ``tokens``, ``cost``, ``external``, ...)."""
        return self.emit("cap_hit", payload={"cap": cap, "limit": str(limit), "spent": str(spent)})

    def user_override(self, action: str, *, actor: str | None = None) -> str:
        """A human intervened in the run."""
        payload: dict[str, Any] = {"action": one_line(action, self.services.redactor)}
        if actor:
            payload["actor"] = actor
        return self.emit("user_override", payload=payload)

    def impersonation_started(self, actor: str, *, reason: str | None = None) -> str:
        """Support or an admin began acting as the tenant's user."""
        return self.emit(
            "impersonation_started", payload=_actor(actor, reason, self.services.redactor)
        )

    def impersonation_ended(self, actor: str, *, reason: str | None = None) -> str:
        """Impersonation ended."""
        return self.emit(
            "impersonation_ended", payload=_actor(actor, reason, self.services.redactor)
        )

    def proof_requested(
        self,
        proof_id: str,
        *,
        due_at: datetime,
        artifact_path: str | None = None,
        artifact_version: int | None = None,
    ) -> str:
        """A proof was sent to the owner, due by ``due_at``.

        ``artifact_path``/``artifact_version`` name the artifact the proof shows (default:
        the run's last artifact); quality sampling re-validates that artifact's content.
        """
        fields: dict[str, Any] = {}
        if artifact_path is not None:
            if artifact_version is None:
                raise ValueError("proof_requested(artifact_path=...) needs artifact_version")
            fields = {"artifact_path": artifact_path, "artifact_version": artifact_version}
        return self.emit(
            "proof_requested",
            payload={"proof_id": proof_id, "due_at": due_at.isoformat()},
            **fields,
        )

    def proof_completed(self, proof_id: str, *, approved: bool = True) -> str:
        """The owner answered a proof."""
        return self.emit("proof_completed", payload={"proof_id": proof_id, "approved": approved})

    def microsite_visit(self, microsite_id: str, *, visitor: str | None = None) -> str:
        """A visit to a published microsite (``visitor``: a salted hash, never raw)."""
        return self.emit("microsite_visit", payload=_microsite(microsite_id, visitor))

    def microsite_conversion(self, microsite_id: str, *, visitor: str | None = None) -> str:
        """A microsite visit converted."""
        return self.emit("microsite_conversion", payload=_microsite(microsite_id, visitor))

    def demo_started(
        self,
        demo_id: str,
        *,
        city: str | None = None,
        location: tuple[float, float] | None = None,
    ) -> str:
        """An Uber Mode demo started; a precise ``location`` is reduced to its city."""
        return self.emit("demo_started", payload=_demo(demo_id, city, location))

    def demo_completed(
        self,
        demo_id: str,
        *,
        city: str | None = None,
        location: tuple[float, float] | None = None,
    ) -> str:
        """An Uber Mode demo ran to its end."""
        return self.emit("demo_completed", payload=_demo(demo_id, city, location))

    # -- calls ------------------------------------------------------------------------------

    def model_call(
        self,
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
        """A model call: a GenAI span, its tokens and cost (context manager or decorator).

        Args:
            model: the requested model; it must be in the pricing table unless
                ``cost_usd`` is given (here or in ``call.record``).
            operation: ``gen_ai.operation.name`` (``chat``, ``text_completion``, ``embeddings``).
            provider: ``gen_ai.provider.name`` (``openai``, ``anthropic``, ...).
            cached: the whole response came from a cache: no charge unless ``cost_usd``.
            cost_usd: the call's price when the caller knows it (overrides the table).
            attributes: extra span attributes (redacted).
            prompt_tokens: the prompt's size, for the caps' estimate of the call.
            max_tokens: the output limit you give the model, for the caps' estimate: with
                caps, the call is checked and reserved at ``prompt_tokens + max_tokens``.

        Raises:
            RunCapReached: a cap stopped the run (nothing was spent on this call).

        Usage::

            with run.model_call(model="gpt-4.1", provider="openai") as call:
                response = client.chat.completions.create(...)
                call.record(response=response)      # or tokens_in=..., tokens_out=...
        """
        cost = None if cost_usd is None else usd(cost_usd, name="cost_usd")
        request = ModelRequest(
            model, operation, provider, cached, cost, attributes, prompt_tokens, max_tokens
        )
        return ModelCall(self, request)

    # -- routing and retries ------------------------------------------------------------------

    def choose_model(self, default: str | None = None) -> str:
        """Return the model for this run's role from the ledger's routing table.

        A retry (``attempt`` > 1) or a run low on its caps' budget gets a cheaper model of the
        role's chain; the Validator always gets its one model. Without a routing table (or a
        route for the role), returns ``default``.
        """
        return self._route(default, self.attempt)

    def call_with_retries(
        self,
        fn: Callable[[str], T],
        *,
        default: str | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        """Call ``fn(model)``, retrying transient errors on the routed model of each try.

        Try ``n`` of a run with ``attempt`` a uses the route of attempt ``a + n - 1``, through
        that model's circuit breaker (``ledger.breakers``); models whose circuit is open are
        skipped. Timeouts, rate limits and 5xx are retried with jittered exponential backoff;
        auth errors, invalid requests and caps are not.

        Usage::

            def draft(model: str) -> str:
                with run.model_call(model, max_tokens=800) as call:
                    response = client.chat.completions.create(model=model, ...)
                    call.record(response=response)
                return response.choices[0].message.content

            text = run.call_with_retries(draft, default="gpt-4.1")
        """
        from runledger.cost.retry import ErrorClass, call_with_retries

        board = self.services.breakers()

        def attempt(n: int) -> T:
            model = self._route(default, self.attempt + n - 1)
            return board.call(model, fn, model)

        def on_retry(n: int, exc: BaseException, why: ErrorClass) -> None:
            self.log(
                f"model call try {n} failed ({why.reason}); retrying",
                level=logging.WARNING, **{"error.type": type(exc).__qualname__},
            )  # fmt: skip

        return call_with_retries(attempt, policy=policy, on_retry=on_retry)

    def _route(self, default: str | None, attempt: int) -> str:
        table = self.services.routing()
        if table is not None:
            from runledger.cost.routing import RoutingError

            remaining = self.costs.remaining_fraction() if self.costs is not None else None
            try:
                route = table.route(
                    self.role, attempt=attempt, remaining_fraction=remaining,
                    is_open=self.services.breakers().is_open,
                )  # fmt: skip
            except RoutingError:
                if default is None:
                    raise
            else:
                if route.step:
                    self.log(f"model {route.model} for {route.role}: {route.reason}")
                return route.model
        if default is None:
            raise ValueError(
                f"no model for role {self.role!r}: pass "
                "Ledger(costs=CostOptions(routing=...)) or a default model"
            )
        return default

    def external_call(
        self,
        name: str,
        *,
        cost_usd: Decimal | float | None = None,
        summary: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ExternalCall:
        """A call that is not a model call (HTTP API, tool, webhook) and its charge in $.

        Usage::

            with run.external_call("maps.geocode", cost_usd=0.005) as ext:
                result = geocode(address)
                ext.summary = "geocoded 1 address"
        """
        return ExternalCall(self, name, cost_usd=cost_usd, summary=summary, attributes=attributes)

    def prompt_audit(
        self, prompt: str, *, response: str | None = None, model: str | None = None
    ) -> None:
        """Store a redacted prompt (and response) in the ledger's ``prompt_audit``, if enabled."""
        self.services.audit(self.tenant_id, self.run_id, prompt, response, model)

    def log(self, message: str, *, level: int = logging.INFO, **attributes: Any) -> None:
        """Write one structured step to the run log (an OTLP log record, redacted)."""
        self._log(message, level, attributes, self.log_context())

    def log_context(self) -> Context:
        """Return the context run log records carry (the current span when in this run)."""
        current = trace.get_current_span()
        ctx = current.get_span_context()
        if ctx.is_valid and ctx.trace_id == self.span_context.trace_id:
            return trace.set_span_in_context(current)
        return self.context

    # -- what the run's calls report (CallingRun) ----------------------------------------------

    def _log(
        self, message: str, level: int, attributes: Mapping[str, Any], context: Context
    ) -> None:
        self.services.log(message, level, {**self.log_attributes, **attributes}, context)

    def _budget_before(self, kind: str, name: str) -> None:
        if self.budget is not None:
            self.budget.before_call(self, kind, name)

    def _budget_after(
        self, kind: str, *, cost_usd: Decimal, tokens_in: int, tokens_out: int
    ) -> None:
        if self.budget is not None:
            self.budget.after_call(
                self, kind, cost_usd=cost_usd, tokens_in=tokens_in, tokens_out=tokens_out
            )

    def _add_usage(self, usage: Usage) -> None:
        """Count a model call's usage; the run's next event carries it."""
        cost = usage.cost_usd
        with self._lock:
            pending = self._pending
            changed = bool(cost and pending.cost_usd) and usage.lease_id != pending.lease_id
            if changed and self.status == "running":
                # One event never mixes two leases (or leased and offline spend): the usage
                # settled on the previous lease leaves now, on its own event.
                self._emit(
                    "external_call",
                    payload={"service": _USAGE_SERVICE, "status": "ok",
                             "summary": "model usage settled on the run's previous budget lease"},
                )  # fmt: skip
                pending = self._pending
            self.model_calls += 1
            self.tokens_in += usage.tokens_in
            self.tokens_out += usage.tokens_out
            self.cost_usd += cost
            pending.tokens_in += usage.tokens_in
            pending.tokens_out += usage.tokens_out
            pending.cost_usd += cost
            pending.model = usage.model
            pending.cached = pending.cached or usage.cached
            if cost:
                pending.lease_id = usage.lease_id
            if self.status == "running":
                self.services.usage(self.run_id, pending)

    def _add_external(self, cost: Decimal, payload: dict[str, Any]) -> str:
        """Count an external call's charge and emit its ``external_call`` event."""
        with self._lock:
            self.cost_usd += cost
            self.external_usd += cost
        return self._emit("external_call", payload=payload, fields={"cost_usd": cost}, usage=False)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.phase}/{self.role} {self.status}>"


def _actor(actor: str, reason: str | None, redactor: Redactor) -> dict[str, Any]:
    payload: dict[str, Any] = {"actor": actor}
    if reason:
        payload["reason"] = one_line(reason, redactor)
    return payload


def _microsite(microsite_id: str, visitor: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"microsite_id": microsite_id}
    if visitor:
        payload["visitor"] = visitor
    return payload


def _demo(demo_id: str, city: str | None, location: tuple[float, float] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"demo_id": demo_id}
    if location is not None:
        found = nearest_city(float(location[0]), float(location[1]))
        city = found.name if found else None
    if city:
        # Only a city of the offline table is a city: an address or a venue never passes.
        payload["city"] = safe_city(city)
    return payload
