"""What a run is given by the Ledger that starts it, and the usage it has not reported yet."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.context import Context
from opentelemetry.trace import Tracer

from runledger.redact import Redactor

if TYPE_CHECKING:
    from runledger.cost.lease import TenantBudget
    from runledger.cost.pricing import PricingTable
    from runledger.cost.retry import BreakerBoard
    from runledger.cost.routing import RoutingTable

__all__ = [
    "EmitEvent",
    "FreezeCheckFailed",
    "LogRecord",
    "OpenRunHandle",
    "RunServices",
    "Usage",
]

_ZERO = Decimal(0)


@dataclass(slots=True)
class Usage:
    """Tokens and dollars of model calls that no event has carried yet (one run's)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal = _ZERO
    model: str | None = None
    cached: bool = False
    lease_id: str | None = None
    """The budget lease ``cost_usd`` was settled on (None: no lease, or offline spend)."""

    def __bool__(self) -> bool:
        return bool(self.tokens_in or self.tokens_out or self.cost_usd)


class OpenRunHandle(Protocol):
    """A run as the Ledger tracks it while it is open: failed if the Ledger closes first."""

    @property
    def run_id(self) -> str: ...

    def fail(self, reason: str | BaseException, *, retryable: bool | None = None) -> None: ...


class EmitEvent(Protocol):
    """Validate, redact and spool one event of a run.

    ``open_run`` (run id, envelope JSON) records the run as open, ``reset_run`` clears its
    journalled usage (the event carries it), ``close_run`` forgets it: each in the event's
    own spool transaction, so a crash never reports usage twice or loses it.
    """

    def __call__(
        self,
        event: dict[str, Any],
        *,
        open_run: tuple[str, bytes] | None = None,
        reset_run: str | None = None,
        close_run: str | None = None,
    ) -> None: ...


class LogRecord(Protocol):
    """Write one run-log record (redacted) in ``context``."""

    def __call__(
        self, message: str, level: int, attributes: Mapping[str, Any], context: Context
    ) -> None: ...


class FreezeCheckFailed(RuntimeError):
    """The ledger could not say whether a playbook's Publisher is frozen."""


@dataclass(frozen=True, slots=True)
class RunServices:
    """Everything a run, its model and external calls and its cost controls use of the Ledger.

    The Ledger builds one and gives it to each run it starts; nothing else of the Ledger is
    reachable from a run.

    Attributes:
        tracer: starts the run's and its calls' spans.
        redactor: redacts span attributes, log bodies and summaries.
        pricing: returns the pricing table (loaded on first use).
        check_priced: ``(model, tenant_id)``; raises ``UnknownModelError`` before a call to
            a model without a price, so nothing is spent unpriced.
        emit: spools one event of the run (see ``EmitEvent``).
        usage: ``(run_id, usage)``; journals the usage the run has not reported on an
            event yet, so a crash still accounts for it.
        log: writes one run-log record.
        audit: ``(tenant_id, run_id, prompt, response, model)``; stores a redacted prompt
            and response when prompt audit is on.
        tenant_budget: ``(tenant_id, run_id, role)``; opens the run's budget lease on its
            tenant's daily cap. None when the cap is not enforced.
        routing: returns the model routing table, or None.
        breakers: returns the circuit breakers shared by the process's runs.
        opened: called when a run has started (the Ledger fails open runs when it closes).
        closed: called when a run has ended.
        snapshot: spools one artifact's content record (``POST /v1/artifacts``) for quality
            sampling and drift checks; None: contents are not sent.
        publish_gate: ``(playbook)``; returns the playbook's active Publisher freeze (a
            mapping) or None, raising ``FreezeCheckFailed`` when the ledger cannot say.
            None: freezes are not checked (a Ledger without a control service).
    """

    tracer: Tracer
    redactor: Redactor
    pricing: Callable[[], PricingTable]
    check_priced: Callable[[str, str], None]
    emit: EmitEvent
    usage: Callable[[str, Usage], None]
    log: LogRecord
    audit: Callable[[str, str, str, str | None, str | None], None]
    tenant_budget: Callable[[str, str, str], TenantBudget] | None
    routing: Callable[[], RoutingTable | None]
    breakers: Callable[[], BreakerBoard]
    opened: Callable[[OpenRunHandle], None]
    closed: Callable[[OpenRunHandle], None]
    snapshot: Callable[[dict[str, Any]], None] | None = None
    publish_gate: Callable[[str], Mapping[str, Any] | None] | None = None
