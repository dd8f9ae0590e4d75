"""SDK settings, read once from a mapping (the environment by default)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import unquote

from runledger import _env

_TRUE = frozenset({"1", "true", "yes", "on"})


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


def _usd(env: Mapping[str, str], name: str) -> Decimal:
    raw = env.get(name, "").strip()
    if not raw:
        return Decimal(0)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{name}={raw!r} is not a dollar amount") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name}={raw!r} must be zero or more dollars")
    return value


def _pairs(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


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
    otel_disabled: bool = False
    service_name: str | None = None
    resource_attributes: dict[str, str] = field(default_factory=dict)
    traces_endpoint: str = "http://localhost:4318/v1/traces"
    logs_endpoint: str = "http://localhost:4318/v1/logs"
    otlp_headers: dict[str, str] = field(default_factory=dict)
    traces_exporter: str = "otlp"
    logs_exporter: str = "otlp"
    sampler_from_env: bool = False
    enforce_caps: bool = False
    on_ledger_down: str = "fail_closed"
    offline_allowance_usd: Decimal = Decimal(0)

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
            otel_disabled=(env.get(_env.OTEL_SDK_DISABLED) or "").strip().lower() in _TRUE,
            service_name=env.get(_env.OTEL_SERVICE_NAME) or None,
            resource_attributes=_pairs(env.get(_env.OTEL_RESOURCE_ATTRIBUTES) or ""),
            traces_endpoint=env.get(_env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or f"{base}/v1/traces",
            logs_endpoint=env.get(_env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) or f"{base}/v1/logs",
            otlp_headers=_pairs(env.get(_env.OTEL_EXPORTER_OTLP_HEADERS) or ""),
            traces_exporter=(env.get(_env.OTEL_TRACES_EXPORTER) or "otlp").strip().lower(),
            logs_exporter=(env.get(_env.OTEL_LOGS_EXPORTER) or "otlp").strip().lower(),
            sampler_from_env=bool(env.get(_env.OTEL_TRACES_SAMPLER)),
            enforce_caps=(env.get(_env.ENFORCE_CAPS) or "").strip().lower() in _TRUE,
            on_ledger_down=on_down,
            offline_allowance_usd=_usd(env, _env.OFFLINE_ALLOWANCE_USD),
        )
