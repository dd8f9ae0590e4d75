"""SDK settings: the ``Ledger``'s option groups, and what it reads from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from opentelemetry._logs import LoggerProvider
from opentelemetry.trace import TracerProvider

from runledger import _env
from runledger.money import parse_usd

if TYPE_CHECKING:
    import requests

    from runledger.cost.lease import LeaseTransport
    from runledger.cost.policy import RunCaps
    from runledger.cost.pricing import PricingTable
    from runledger.cost.routing import RoutingTable

__all__ = ["CostOptions", "DeliveryOptions", "Settings", "TelemetryOptions"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must be >= 0")
    return value


def _enforce_caps(env: Mapping[str, str]) -> bool:
    raw = (env.get(_env.ENFORCE_CAPS) or "").strip().lower()
    if raw in _FALSE:
        return False
    if raw and raw not in _TRUE:
        raise ValueError(
            f"{_env.ENFORCE_CAPS}={raw!r} must be 1 (enforce the tenant daily cap, the default) "
            "or 0 (do not enforce it)"
        )
    return True


def _usd(env: Mapping[str, str], name: str) -> Decimal:
    raw = env.get(name, "").strip()
    return parse_usd(raw, name=f"{name}={raw!r}") if raw else Decimal(0)


def _pairs(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


@dataclass(frozen=True)
class TelemetryOptions:
    """Where a Ledger's spans and run logs go.

    Args:
        tracer_provider: default: the global one if an SDK provider is installed, else one
            built from the ``OTEL_*`` variables (OTLP/HTTP, rate-limited sampling).
        logger_provider: likewise for OTLP logs.
        capture_logging: forward ``logging`` records emitted inside a run as run logs.
    """

    tracer_provider: TracerProvider | None = None
    logger_provider: LoggerProvider | None = None
    capture_logging: bool = True


@dataclass(frozen=True)
class DeliveryOptions:
    """How a Ledger keeps and sends its events.

    Args:
        spool_path: SQLite spool file (default ``RUNLEDGER_SPOOL_PATH`` or
            ``$RUNLEDGER_HOME/spool/events.db``).
        session: HTTP session of the sender (tests).
    """

    spool_path: str | Path | None = None
    session: requests.Session | None = None


@dataclass(frozen=True)
class CostOptions:
    """How a Ledger prices calls and controls what its runs spend.

    Args:
        pricing: the pricing table (default ``runledger.cost.pricing.default_pricing()``).
        enforce_tenant_cap: draw every run's model and external spend from a budget lease
            on its tenant's daily cap (default ``RUNLEDGER_ENFORCE_CAPS``, on). ``False``
            is for tenants without a cap: runs may then spend past it (warned once per
            process, and counted by ``runledger_sdk_uncapped_runs_total``).
        on_ledger_down: ``fail_closed`` (refuse spend) or ``fail_open`` (spend up to
            ``offline_allowance_usd`` per run without a lease) when the ledger cannot be
            reached (default ``RUNLEDGER_ON_LEDGER_DOWN``, fail_closed). The Publisher
            always fails closed.
        offline_allowance_usd: see ``on_ledger_down`` (``RUNLEDGER_OFFLINE_ALLOWANCE_USD``).
        lease_transport: how budgets talk to the ledger (default: ``HttpLeaseTransport``
            on the Ledger's ``url`` and ``token``; ``PgLeaseTransport`` for in-process
            services).
        run_caps: default ``RunCaps`` per playbook; ``ledger.run(caps=...)`` overrides.
        routing: a ``RoutingTable`` (or the path of its YAML file) for ``run.choose_model``
            and ``run.call_with_retries``.
    """

    pricing: PricingTable | None = None
    enforce_tenant_cap: bool | None = None
    on_ledger_down: str | None = None
    offline_allowance_usd: Decimal | float | str | None = None
    lease_transport: LeaseTransport | None = None
    run_caps: Mapping[str, RunCaps] | None = None
    routing: RoutingTable | str | Path | None = None


@dataclass(frozen=True)
class Settings:
    """Everything the SDK reads from the environment."""

    url: str | None = None
    token: str | None = None
    spool_path: Path = Path(".runledger/spool/events.db")
    spool_max_events: int = 100_000
    spool_full_timeout: float = 10.0
    traces_per_second: float = 10.0
    prompt_audit: bool = False
    shutdown_timeout: float = 5.0
    telemetry_shutdown_timeout: float = 2.0
    otlp_endpoint_set: bool = False
    """True when an OTEL_EXPORTER_OTLP_*ENDPOINT variable names where telemetry goes."""
    otel_disabled: bool = False
    service_name: str | None = None
    resource_attributes: dict[str, str] = field(default_factory=dict)
    traces_endpoint: str = "http://localhost:4318/v1/traces"
    logs_endpoint: str = "http://localhost:4318/v1/logs"
    otlp_headers: dict[str, str] = field(default_factory=dict)
    traces_exporter: str = "otlp"
    logs_exporter: str = "otlp"
    sampler_from_env: bool = False
    enforce_caps: bool = True
    on_ledger_down: str = "fail_closed"
    offline_allowance_usd: Decimal = Decimal(0)

    def sending_to_ledger(self, url: str | None, token: str | None) -> Settings:
        """Return these settings with spans going to runledger's own OTLP receiver at ``url``.

        Applies when no ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set: the control service stores
        the spans (``POST /v1/traces``) for the run page. It has no log receiver, so run
        logs are then not exported unless an endpoint is set.
        """
        if self.otlp_endpoint_set or not url:
            return self
        headers = dict(self.otlp_headers)
        if token and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"Bearer {token}"
        return replace(
            self,
            traces_endpoint=f"{url.rstrip('/')}/v1/traces",
            otlp_headers=headers,
            logs_exporter="none",
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        home = Path(env.get(_env.HOME) or ".runledger")
        base = (env.get(_env.OTEL_EXPORTER_OTLP_ENDPOINT) or "http://localhost:4318").rstrip("/")
        on_down = (env.get(_env.ON_LEDGER_DOWN) or "fail_closed").strip().lower()
        if on_down not in ("fail_closed", "fail_open"):
            raise ValueError(f"{_env.ON_LEDGER_DOWN}={on_down!r} must be fail_closed or fail_open")
        max_events = int(_float(env, _env.SPOOL_MAX_EVENTS, 100_000))
        if max_events < 1:
            raise ValueError(f"{_env.SPOOL_MAX_EVENTS} must be at least 1")
        return cls(
            url=(env.get(_env.URL) or "").strip() or None,
            token=(env.get(_env.TOKEN) or "").strip() or None,
            spool_path=Path(env.get(_env.SPOOL_PATH) or home / "spool" / "events.db"),
            spool_max_events=max_events,
            spool_full_timeout=_float(env, _env.SPOOL_FULL_TIMEOUT, 10.0),
            traces_per_second=_float(env, _env.TRACES_PER_SECOND, 10.0),
            prompt_audit=(env.get(_env.PROMPT_AUDIT) or "").strip().lower() in _TRUE,
            shutdown_timeout=_float(env, _env.SHUTDOWN_TIMEOUT, 5.0),
            telemetry_shutdown_timeout=_float(env, _env.TELEMETRY_SHUTDOWN_TIMEOUT, 2.0),
            otlp_endpoint_set=any(
                env.get(k)
                for k in (
                    _env.OTEL_EXPORTER_OTLP_ENDPOINT,
                    _env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                    _env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
                )
            ),
            otel_disabled=(env.get(_env.OTEL_SDK_DISABLED) or "").strip().lower() in _TRUE,
            service_name=env.get(_env.OTEL_SERVICE_NAME) or None,
            resource_attributes=_pairs(env.get(_env.OTEL_RESOURCE_ATTRIBUTES) or ""),
            traces_endpoint=env.get(_env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or f"{base}/v1/traces",
            logs_endpoint=env.get(_env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) or f"{base}/v1/logs",
            otlp_headers=_pairs(env.get(_env.OTEL_EXPORTER_OTLP_HEADERS) or ""),
            traces_exporter=(env.get(_env.OTEL_TRACES_EXPORTER) or "otlp").strip().lower(),
            logs_exporter=(env.get(_env.OTEL_LOGS_EXPORTER) or "otlp").strip().lower(),
            sampler_from_env=bool(env.get(_env.OTEL_TRACES_SAMPLER)),
            enforce_caps=_enforce_caps(env),
            on_ledger_down=on_down,
            offline_allowance_usd=_usd(env, _env.OFFLINE_ALLOWANCE_USD),
        )
