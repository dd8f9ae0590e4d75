"""The Ledger client: configuration, the spool and its sender, telemetry providers."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
from opentelemetry import trace
from opentelemetry._logs import LoggerProvider as APILoggerProvider
from opentelemetry._logs import NoOpLoggerProvider, get_logger_provider
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider as SDKLoggerProvider
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from pydantic import ValidationError

from runledger import __version__
from runledger.events import EVENT_MODELS
from runledger.money import parse_usd, usd
from runledger.redact import Redactor, default_redactor
from runledger.sdk._config import CostOptions, DeliveryOptions, Settings, TelemetryOptions
from runledger.sdk._reruns import RerunError, RerunRequest, claim_rerun
from runledger.sdk._run import Budget, Run, RunSpec, current_run
from runledger.sdk._sender import Sender
from runledger.sdk._services import FreezeCheckFailed, OpenRunHandle, RunServices
from runledger.sdk._spool import OpenRun, Spool
from runledger.sdk._telemetry import (
    RunLogHandler,
    build_logger_provider,
    build_tracer_provider,
    severity,
)

if TYPE_CHECKING:
    from runledger.cost.lease import LeaseSize, TenantBudget
    from runledger.cost.policy import RunCaps
    from runledger.cost.pricing import PricingTable
    from runledger.cost.projection import BudgetVerdict, Plan, Projection
    from runledger.cost.retry import BreakerBoard
    from runledger.cost.routing import RoutingTable
    from runledger.store.leases import LeaseState

__all__ = ["Ledger"]

log = logging.getLogger("runledger.sdk")

_RECOVERY_NS = uuid.UUID("5b0c6f3e-8d0a-4e59-9a43-6b1f0c7d2e11")
_FREE_TEXT = ("artifact_path",)


@functools.cache
def _warn_uncapped() -> None:
    """Say, once per process, that runs here may spend past their tenant's daily cap."""
    log.warning(
        "runledger: the tenant daily cap is not enforced in this process "
        "(RUNLEDGER_ENFORCE_CAPS=0 or CostOptions(enforce_tenant_cap=False)): its runs can "
        "spend past their tenant's daily cap; the ledger still records what they spend and "
        "counts them in runledger_sdk_uncapped_runs_total. To enforce the cap again, unset "
        "RUNLEDGER_ENFORCE_CAPS (or set it to 1) and drop enforce_tenant_cap=False."
    )


_NO_CONTROL_SERVICE = (
    "the tenant daily cap is enforced by default and this Ledger has no control service to "
    "draw its budget leases from: set RUNLEDGER_URL and RUNLEDGER_TOKEN (or pass url= and "
    "token=, or CostOptions(lease_transport=)); for a tenant without a cap, turn enforcement "
    "off with RUNLEDGER_ENFORCE_CAPS=0 or CostOptions(enforce_tenant_cap=False)"
)


class _NoControlService:
    """The lease transport of a Ledger without a control service: every spend is refused."""

    def open(self, tenant_id: str, **_: Any) -> LeaseState:
        return self._refuse()

    def sync(self, lease_id: str, **_: Any) -> LeaseState:
        return self._refuse()

    def close(self, lease_id: str, **_: Any) -> LeaseState:
        return self._refuse()

    @staticmethod
    def _refuse() -> NoReturn:
        from runledger.cost.lease import LedgerNotConfigured

        raise LedgerNotConfigured(_NO_CONTROL_SERVICE)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _within(timeout: float, work: Callable[[], None], what: str, endpoint: str) -> None:
    """Run ``work`` in a daemon thread and wait for it ``timeout`` seconds at most."""
    worker = threading.Thread(target=work, name=f"runledger-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        log.warning(
            "runledger: %s not done within %.1f s (is an OTLP receiver listening at %s?);"
            " spans not yet sent may be dropped",
            what,
            timeout,
            endpoint,
        )


class Ledger:
    """Client of the runledger control service for one agent or Coordinator process.

    Args:
        url: control service base URL (default ``RUNLEDGER_URL``; unset keeps events in the
            spool until a process that has it opens the spool, and, while the tenant cap is
            enforced, makes each spending call raise ``LedgerNotConfigured``).
        token: bearer token (default ``RUNLEDGER_TOKEN``).
        redactor: redaction rules (default ``runledger.redact.DEFAULT_RULES``).
        prompt_audit: store redacted prompts (default ``RUNLEDGER_PROMPT_AUDIT``).
        environ: read settings from this mapping instead of ``os.environ``.
        telemetry: tracer and logger providers, and whether ``logging`` records inside a
            run become run logs (``TelemetryOptions``).
        delivery: the spool file and the sender's HTTP session (``DeliveryOptions``).
        costs: pricing, the tenant cap's budget leases, per-playbook run caps and model
            routing (``CostOptions``).

    Usage::

        ledger = Ledger()
        with ledger.run("acme", "proj-1", phase="build", role="implementer") as run:
            with run.model_call(model="gpt-4.1") as call:
                call.record(tokens_in=1200, tokens_out=300)
            run.artifact_written("site/index.html", 3)
        ledger.flush(timeout=5)

        ledger = Ledger(costs=CostOptions(run_caps={"landing": caps}))
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        redactor: Redactor | None = None,
        prompt_audit: bool | None = None,
        environ: Mapping[str, str] | None = None,
        telemetry: TelemetryOptions | None = None,
        delivery: DeliveryOptions | None = None,
        costs: CostOptions | None = None,
    ) -> None:
        telemetry = telemetry or TelemetryOptions()
        delivery = delivery or DeliveryOptions()
        costs = costs or CostOptions()
        settings = Settings.from_env(environ)
        self.url = url or settings.url
        self._token = token or settings.token
        # Without an OTLP endpoint of its own, telemetry goes to runledger's receiver.
        settings = settings.sending_to_ledger(self.url, self._token)
        self.settings = settings
        self.enforce_tenant_cap = (
            settings.enforce_caps if costs.enforce_tenant_cap is None else costs.enforce_tenant_cap
        )
        self.on_ledger_down = costs.on_ledger_down or settings.on_ledger_down
        if self.on_ledger_down not in ("fail_closed", "fail_open"):
            raise ValueError("on_ledger_down must be 'fail_closed' or 'fail_open'")
        self.offline_allowance_usd = (
            settings.offline_allowance_usd
            if costs.offline_allowance_usd is None
            else parse_usd(costs.offline_allowance_usd, name="offline_allowance_usd")
        )
        self._lease_transport = costs.lease_transport
        self._lease_sizes: dict[str, LeaseSize] = {}
        if not self.enforce_tenant_cap:
            _warn_uncapped()
        self.run_caps: dict[str, RunCaps] = dict(costs.run_caps or {})
        self._routing_source = costs.routing
        self._routing: RoutingTable | None = None
        self._breakers: BreakerBoard | None = None
        self.redactor = redactor or default_redactor()
        self.prompt_audit_enabled = settings.prompt_audit if prompt_audit is None else prompt_audit
        self._pricing = costs.pricing
        self._pricing_lock = threading.Lock()
        self._priced: set[tuple[str, str]] = set()
        self._runs: dict[str, OpenRunHandle] = {}
        self._runs_lock = threading.Lock()
        self._closed = False
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._spool = Spool(
            Path(delivery.spool_path) if delivery.spool_path else settings.spool_path,
            owner=self.owner,
            max_records=settings.spool_max_events,
            full_timeout=settings.spool_full_timeout,
        )
        self._own_providers: list[Any] = []
        self.tracer_provider = telemetry.tracer_provider or self._default_tracer_provider()
        self.logger_provider = telemetry.logger_provider or self._default_logger_provider()
        self.tracer = self.tracer_provider.get_tracer("runledger.sdk", __version__)
        self._otel_logger = self.logger_provider.get_logger("runledger.run", __version__)
        self._services = RunServices(
            tracer=self.tracer,
            redactor=self.redactor,
            pricing=lambda: self.pricing,
            check_priced=self._check_priced,
            emit=self._spool_event,
            usage=self._spool.set_usage,
            log=self._run_log,
            audit=self._prompt_audit,
            tenant_budget=self._tenant_budget if self.enforce_tenant_cap else None,
            routing=lambda: self.routing,
            breakers=lambda: self.breakers,
            opened=self._opened,
            closed=self._closed_run,
            snapshot=self._spool_snapshot,
            publish_gate=self._publish_gate if self.url else None,
        )
        self._gate_session: Any = None
        self._handler: RunLogHandler | None = None
        if telemetry.capture_logging:
            self._handler = RunLogHandler(
                self.logger_provider, self.redactor, current_run, self._services
            )
            logging.getLogger().addHandler(self._handler)
        self._sender = Sender(
            self._spool, self.url, self._token, session=delivery.session, redactor=self.redactor
        )
        self._recover()
        self._sender.start()
        self._warm_up()
        atexit.register(self.close)

    # -- providers --------------------------------------------------------------------------

    def _default_tracer_provider(self) -> trace.TracerProvider:
        if self.settings.otel_disabled:
            return trace.NoOpTracerProvider()
        current = trace.get_tracer_provider()
        if isinstance(current, SDKTracerProvider):
            return current
        provider = build_tracer_provider(self.settings, self.redactor)
        self._own_providers.append(provider)
        return provider

    def _default_logger_provider(self) -> APILoggerProvider:
        if self.settings.otel_disabled:
            return NoOpLoggerProvider()
        current = get_logger_provider()
        if isinstance(current, SDKLoggerProvider):
            return current
        provider = build_logger_provider(self.settings, self.redactor)
        self._own_providers.append(provider)
        return provider

    @property
    def pricing(self) -> PricingTable:
        """The pricing table model calls are costed with."""
        if self._pricing is None:
            with self._pricing_lock:  # runs may start calls from several threads
                if self._pricing is None:
                    from runledger.cost.pricing import default_pricing

                    self._pricing = default_pricing()
        return self._pricing

    def _warm_up(self) -> None:
        """Load what the first model call needs (pricing, cost controls) now, in ``Ledger()``.

        The first model call of a process then costs what the next ones cost, instead of
        importing the cost controls and reading the pricing table (docs/sdk.md).
        """
        try:
            _ = self.pricing
            if self.enforce_tenant_cap:
                import runledger.cost.lease  # noqa: F401
        except Exception:  # the first call reports the same problem where it can be handled
            log.debug("runledger: warm-up failed", exc_info=True)

    @property
    def routing(self) -> RoutingTable | None:
        """The model routing table (``Ledger(costs=CostOptions(routing=...))``), or None."""
        if self._routing is None and self._routing_source is not None:
            from runledger.cost.routing import RoutingTable

            source = self._routing_source
            self._routing = (
                source
                if isinstance(source, RoutingTable)
                else RoutingTable.load(source, pricing=self.pricing)
            )
        return self._routing

    @property
    def breakers(self) -> BreakerBoard:
        """One circuit breaker per model, shared by this process's runs."""
        if self._breakers is None:
            from runledger.cost.retry import BreakerBoard

            self._breakers = BreakerBoard()
        return self._breakers

    @breakers.setter
    def breakers(self, board: BreakerBoard) -> None:
        self._breakers = board

    def project(
        self,
        plan: Plan | Mapping[str, Any] | str | Path,
        *,
        tenant_id: str | None = None,
        budget_usd: Decimal | float | str | None = None,
        budget_tokens: int | None = None,
    ) -> tuple[Projection, BudgetVerdict]:
        """Project a plan's tokens and dollars and gate it on budgets before the run.

        Warns (a WARNING on ``runledger.sdk``, and ``verdict.level == "warn"``) at 90% of
        ``budget_usd`` or ``budget_tokens``; at 100% raises ``BudgetBlocked``.

        Usage::

            projection, verdict = ledger.project("plan.yml", tenant_id="acme", budget_usd=2)
            print(projection.render(), *verdict.messages, sep="\n")
        """
        from runledger.cost.projection import Plan, check_budget, load_plan, project

        if not isinstance(plan, Plan):
            plan = load_plan(dict(plan) if isinstance(plan, Mapping) else plan)
        projection = project(plan, self.pricing, tenant_id=tenant_id)
        verdict = check_budget(
            projection,
            budget_usd=None if budget_usd is None else usd(budget_usd, name="budget_usd"),
            budget_tokens=budget_tokens,
        )
        for message in verdict.messages:
            log.warning("runledger: plan %s: %s", projection.plan, message)
        verdict.raise_if_blocked()
        return projection, verdict

    def _tenant_budget(self, tenant_id: str, run_id: str, role: str) -> TenantBudget:
        """Return the budget lease a run draws from on its tenant's daily cap."""
        from runledger.cost.lease import HttpLeaseTransport, LeaseSize, TenantBudget

        if self._lease_transport is None:
            self._lease_transport = (
                HttpLeaseTransport(self.url, self._token)
                if self.url and self._token
                else _NoControlService()
            )
        size = self._lease_sizes.get(tenant_id)
        if size is None:
            size = self._lease_sizes.setdefault(tenant_id, LeaseSize())
        publisher = role.lower() == "publisher"
        budget = TenantBudget(
            self._lease_transport, tenant_id, holder=run_id, role=role.lower(),
            on_ledger_down="fail_closed" if publisher else self.on_ledger_down,  # type: ignore[arg-type]
            offline_allowance_usd=Decimal(0) if publisher else self.offline_allowance_usd,
            size=size,
        )  # fmt: skip
        # The run takes its lease as it starts: its calls then never wait for the opening.
        budget.prepare()
        return budget

    def _check_priced(self, model: str, tenant_id: str) -> None:
        key = (model, tenant_id)
        if key not in self._priced:
            # Raises UnknownModelError before the call is made: nothing is spent unpriced.
            self.pricing.cost(model, tokens_in=0, tokens_out=0, tenant_id=tenant_id)
            self._priced.add(key)

    # -- runs -------------------------------------------------------------------------------

    def run(
        self,
        tenant_id: str,
        project_id: str,
        phase: str,
        role: str,
        *,
        run_id: str | None = None,
        playbook: str | None = None,
        attempt: int = 1,
        attributes: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
        caps: RunCaps | None = None,
    ) -> Run:
        """Return a run to use as ``with ledger.run(...) as run:``.

        Entering emits ``run_started``; leaving emits ``run_finished``, or ``run_failed``
        with the exception as the reason (the exception propagates). ``caps`` limits the
        run's tokens, wall time and dollars (default: ``run_caps[playbook]``); a cap that
        stops the run raises ``RunCapReached`` from the call that would cross it.
        """
        self._check_open()
        if caps is None and playbook is not None:
            caps = self.run_caps.get(playbook)
        spec = RunSpec(
            tenant_id, project_id, phase, role, run_id or f"run-{uuid.uuid4().hex}", playbook,
            attempt,
        )  # fmt: skip
        return Run(self._services, spec, attributes=attributes, budget=budget, caps=caps)

    def start_run(
        self,
        tenant_id: str,
        project_id: str,
        phase: str,
        role: str,
        *,
        run_id: str | None = None,
        playbook: str | None = None,
        attempt: int = 1,
        attributes: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
        caps: RunCaps | None = None,
    ) -> Run:
        """Start a run without a ``with`` block; end it with ``run.finish()``, ``run.partial()``
        or ``run.fail()``."""
        return self.run(
            tenant_id, project_id, phase, role, run_id=run_id, playbook=playbook,
            attempt=attempt, attributes=attributes, budget=budget, caps=caps,
        ).start()  # fmt: skip

    def run_queued(
        self,
        tenant_id: str,
        project_id: str,
        phase: str,
        role: str,
        *,
        run_id: str | None = None,
        playbook: str | None = None,
        attempt: int = 1,
    ) -> str:
        """Emit ``run_queued`` for a run that will start later; return its run id."""
        self._check_open()
        run_id = run_id or f"run-{uuid.uuid4().hex}"
        event = {
            "event_id": str(uuid.uuid4()),
            "type": "run_queued",
            "tenant_id": tenant_id,
            "project_id": project_id,
            "run_id": run_id,
            "phase": phase,
            "role": role,
            "playbook": playbook,
            "attempt": attempt,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        self._spool_event(event)
        return run_id

    def claim_rerun(self, tenant_id: str, *, holder: str = "coordinator") -> RerunRequest | None:
        """Claim the tenant's oldest rerun request from the console; None when none waits.

        Usage::

            request = ledger.claim_rerun("acme")
            if request is not None:
                with ledger.rerun(request) as run:
                    ...  # do the step again

        Raises:
            RerunError: no control service is configured, or it refused the claim.
        """
        self._check_open()
        if not (self.url and self._token):
            raise RerunError("claiming reruns needs RUNLEDGER_URL and RUNLEDGER_TOKEN")
        return claim_rerun(self.url, self._token, tenant_id, holder=holder)

    def rerun(self, request: RerunRequest, **kwargs: Any) -> Run:
        """Return the run of a claimed rerun: its assigned id, the next attempt."""
        attributes = {
            **dict(kwargs.pop("attributes", None) or {}),
            "runledger.rerun_of": request.run_id,
            "runledger.rerun_request": request.request_id,
        }
        return self.run(
            request.tenant_id, request.project_id, request.phase, request.role,
            run_id=request.new_run_id, playbook=request.playbook,
            attempt=request.attempt + 1, attributes=attributes, **kwargs,
        )  # fmt: skip

    def emit(self, event: Mapping[str, Any]) -> str:
        """Spool one complete event (a dict of the spec); return its event id.

        ``event_id`` and ``occurred_at`` are filled in when missing.
        """
        self._check_open()
        data = dict(event)
        data.setdefault("event_id", str(uuid.uuid4()))
        data.setdefault("occurred_at", datetime.now(UTC).isoformat())
        self._spool_event(data)
        return str(data["event_id"])

    # -- delivery ---------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Deliver everything spooled so far; return False if some is left after ``timeout``.

        Also makes the spool durable (fsync) and exports pending spans and log records.
        """
        import time

        deadline = time.monotonic() + timeout
        target = self._spool.last_id()
        self._spool.sync(force=True)
        bound = max(0.0, min(timeout, self.settings.telemetry_shutdown_timeout))

        def flush_telemetry() -> None:
            for provider in (self.tracer_provider, self.logger_provider):
                force = getattr(provider, "force_flush", None)
                if callable(force):
                    force(int(bound * 1000))

        # An OTLP exporter retries a dead collector for its own timeout whatever force_flush
        # is told: never let that hold up the ledger's events.
        _within(bound, flush_telemetry, "telemetry flush", self.settings.traces_endpoint)
        if self._spool.pending(up_to=target) == 0:
            return True
        if self.url is None or not self._sender.is_alive():
            return False
        self._sender.wake()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._spool.pending(up_to=target) == 0
            self._sender.wait_progress(min(left, 0.05))
            if self._spool.pending(up_to=target) == 0:
                return True

    def pending(self) -> int:
        """Return how many records wait in the spool for the ledger."""
        return self._spool.pending()

    def dead_letters(self) -> list[dict[str, Any]]:
        """Return the dead-lettered records: those the ledger rejected for good, and those it
        failed on alone again and again while it accepted others (``runledger spool resend``
        sends them again), each with the ledger's answer."""
        return self._spool.dead_letters()

    @property
    def spool_path(self) -> Path:
        """The spool file."""
        return self._spool.path

    def close(self, timeout: float | None = None) -> None:
        """Fail open runs, deliver what can be delivered within ``timeout``, stop the sender.

        Runs at interpreter exit too. Undelivered records stay in the spool for next time.
        """
        if self._closed:
            return
        atexit.unregister(self.close)
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        with self._runs_lock:
            open_runs = list(self._runs.values())
        for run in open_runs:
            try:
                run.fail("the agent's ledger was closed before the run ended")
            except Exception:
                log.exception("runledger: could not end run %s", run.run_id)
        self._closed = True
        try:
            delivered = self.flush(timeout)
        except Exception:
            log.exception("runledger: flush at close failed")
            delivered = False
        if not delivered and self.url is not None:
            log.warning(
                "runledger: %d records not yet acknowledged stay in %s; they are sent when a "
                "process opens this spool again (last error: %s)",
                self._spool.pending(),
                self._spool.path,
                self._sender.last_error,
            )
        self._sender.stop(timeout=5.0)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
        self._shutdown_telemetry(self.settings.telemetry_shutdown_timeout)
        self._spool.close()

    def _shutdown_telemetry(self, timeout: float) -> None:
        """Shut this Ledger's own span and log providers down, waiting ``timeout`` at most.

        An OTLP exporter with nothing listening retries for up to its own timeout (10 s by
        default) per batch; spans are telemetry, not money, so an exit never waits for them
        longer than ``RUNLEDGER_TELEMETRY_SHUTDOWN_TIMEOUT``: what is not sent is dropped.
        """

        def shutdown() -> None:
            for provider in self._own_providers:
                try:
                    provider.shutdown()
                except Exception:
                    log.exception("runledger: telemetry provider shutdown failed")

        if self._own_providers:
            _within(timeout, shutdown, "telemetry shutdown", self.settings.traces_endpoint)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what runs use of the Ledger (RunServices) -------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Ledger was closed")

    def _opened(self, run: OpenRunHandle) -> None:
        with self._runs_lock:
            self._runs[run.run_id] = run

    def _closed_run(self, run: OpenRunHandle) -> None:
        with self._runs_lock:
            self._runs.pop(run.run_id, None)

    def _clean(self, event: dict[str, Any]) -> dict[str, Any]:
        payload = event.get("payload")
        if payload:
            event["payload"] = self.redactor.value(payload)
        for key in _FREE_TEXT:
            if isinstance(event.get(key), str):
                event[key] = self.redactor.text(event[key])
        return {k: v for k, v in event.items() if v is not None}

    def _spool_event(
        self,
        event: dict[str, Any],
        *,
        open_run: tuple[str, bytes] | None = None,
        reset_run: str | None = None,
        close_run: str | None = None,
    ) -> None:
        event = self._clean(event)
        model = EVENT_MODELS.get(str(event.get("type")))
        if model is None:
            raise ValueError(
                f"unknown event type {event.get('type')!r}; expected one of: "
                + ", ".join(EVENT_MODELS)
            )
        try:
            model.model_validate(event)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"invalid {event['type']} event: {problems}") from None
        body = orjson.dumps(event, default=_json_default)
        self._spool.append(
            "event", body, open_run=open_run, reset_run=reset_run, close_run=close_run
        )

    def _spool_snapshot(self, record: dict[str, Any]) -> None:
        self._spool.append("artifact", orjson.dumps(record))

    def _publish_gate(self, playbook: str) -> Mapping[str, Any] | None:
        """Return the playbook's active Publisher freeze, asking the control service."""
        import requests

        if self._gate_session is None:
            self._gate_session = requests.Session()
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            resp = self._gate_session.get(
                f"{self.url}/v1/playbooks/{playbook}/freeze", headers=headers, timeout=5.0
            )
        except requests.RequestException as exc:
            raise FreezeCheckFailed(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            try:
                detail = str(resp.json().get("error"))
            except ValueError:
                detail = resp.text[:200]
            raise FreezeCheckFailed(
                f"HTTP {resp.status_code}: {self.redactor.text(detail, limit=300)}"
            )
        body = resp.json()
        freeze: Mapping[str, Any] | None = body.get("freeze") if body.get("frozen") else None
        return freeze

    def _prompt_audit(
        self, tenant_id: str, run_id: str, prompt: str, response: str | None, model: str | None
    ) -> None:
        if not self.prompt_audit_enabled:
            return
        record = {
            "audit_id": str(uuid.uuid4()),
            "tenant_id": tenant_id,
            "run_id": run_id,
            "model": model,
            "prompt": self.redactor.text(prompt),
            "response": self.redactor.text(response) if response is not None else None,
            "created_at": datetime.now(UTC).isoformat(),
        }
        self._spool.append("prompt_audit", orjson.dumps(record))

    def _run_log(
        self, message: str, level: int, attributes: Mapping[str, Any], context: Context
    ) -> None:
        self._otel_logger.emit(
            context=context,
            severity_number=severity(level),
            severity_text=logging.getLevelName(level),
            body=self.redactor.text(message),
            attributes=self.redactor.attributes(attributes),
        )

    def _recover(self) -> None:
        """Turn runs of processes that died mid-run into ``run_failed`` events."""
        owners = set()
        for orphan in self._spool.orphaned_runs():
            owners.add(orphan.owner)
            self._spool.adopt(orphan, "event", self._recovery_event(orphan))
            log.warning(
                "runledger: run %s was left open by a process that exited; recorded it as "
                "failed with its unreported usage",
                orphan.run_id,
            )
        for owner in owners:
            self._spool.forget_owner(owner)

    @staticmethod
    def _recovery_event(orphan: OpenRun) -> bytes:
        envelope = orjson.loads(orphan.envelope)
        event = {
            **envelope,
            "event_id": str(uuid.uuid5(_RECOVERY_NS, f"{orphan.owner}/{orphan.run_id}")),
            "type": "run_failed",
            "occurred_at": datetime.now(UTC).isoformat(),
            "tokens_in": orphan.tokens_in,
            "tokens_out": orphan.tokens_out,
            "cost_usd": orphan.cost_usd,
            "cached": orphan.cached,
            "payload": {
                "reason": "the agent process exited before the run ended",
                "error_class": "ProcessExited",
                "retryable": True,
            },
        }
        if orphan.model:
            event["model"] = orphan.model
        if orphan.lease_id and Decimal(orphan.cost_usd or "0"):
            event["payload"]["lease_id"] = orphan.lease_id
        return orjson.dumps({k: v for k, v in event.items() if v is not None})
