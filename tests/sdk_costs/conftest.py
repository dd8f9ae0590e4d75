"""Fixtures of the SDK cost-control tests: a tenant with an agent token, a control service
the test can stop by PID, and Ledgers with in-memory spans that close themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _sdk_costs_support import Spans
from opentelemetry._logs import NoOpLoggerProvider

from _support import ControlService
from runledger.sdk import DeliveryOptions, Ledger, TelemetryOptions


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.provider.shutdown()


@pytest.fixture
def control(db_url: str) -> Iterator[ControlService]:
    """A started control service on a free loopback port, stopped by PID at teardown."""
    service = ControlService(db_url)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def agent_token(
    make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> Callable[[str, str], str]:
    """Create a tenant with a daily cap and return an agent token for it."""

    def make(tenant: str, cap: str) -> str:
        make_tenant(tenant, cap)
        return make_token("agent", tenant)

    return make


@pytest.fixture
def make_ledger(tmp_path: Path, spans: Spans) -> Iterator[Callable[..., Ledger]]:
    """Build Ledgers with a private spool, in-memory spans and no log export."""
    made: list[Ledger] = []

    def make(url: str | None = None, token: str | None = None, **kwargs: Any) -> Ledger:
        spool = tmp_path / f"spool-{len(made)}" / "events.db"
        kwargs.setdefault("delivery", DeliveryOptions(spool_path=spool))
        kwargs.setdefault(
            "telemetry",
            TelemetryOptions(
                tracer_provider=spans.provider,
                logger_provider=NoOpLoggerProvider(),
                capture_logging=False,
            ),
        )
        kwargs.setdefault("environ", {})
        ledger = Ledger(url, token, **kwargs)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close(timeout=1.0)
