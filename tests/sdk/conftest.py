"""SDK fixtures: in-memory telemetry, ledgers that close themselves, a real OTLP receiver,
and a control service that a test can stop and start again on the same port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _sdk_support import OtlpReceiver, Telemetry

from _support import ControlService
from runledger.sdk import DeliveryOptions, Ledger, TelemetryOptions


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.logger_provider.shutdown()


@pytest.fixture
def make_ledger(tmp_path: Path, telemetry: Telemetry) -> Iterator[Callable[..., Ledger]]:
    """Build Ledgers with in-memory telemetry and a private spool; all closed at teardown."""
    made: list[Ledger] = []

    def make(url: str | None = None, token: str | None = None, **kwargs: Any) -> Ledger:
        kwargs.setdefault("delivery", DeliveryOptions(spool_path=tmp_path / "spool" / "events.db"))
        kwargs.setdefault(
            "telemetry",
            TelemetryOptions(
                tracer_provider=telemetry.tracer_provider,
                logger_provider=telemetry.logger_provider,
            ),
        )
        kwargs.setdefault("environ", {})
        ledger = Ledger(url, token, **kwargs)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close(timeout=1.0)


@pytest.fixture
def agent(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    """Tenant ``acme`` and an agent token for it."""
    make_tenant("acme")
    return {"tenant": "acme", "token": make_token("agent", "acme")}


@pytest.fixture
def control_service(db_url: str) -> Iterator[ControlService]:
    """A control service the test can stop and start again (not started yet)."""
    service = ControlService(db_url)
    yield service
    service.stop()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()
