"""Per-run caps: tokens, wall time, model $ and external $ each stop the run before spending."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runledger.cost.policy import RunCapHit, RunCaps, RunMeter
from runledger.events import validate_batch


class Tick:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_cap_stops_the_call_that_would_cross_it() -> None:
    meter = RunMeter(RunCaps(max_tokens=1000))
    meter.check(tokens=600)
    meter.record(tokens=600)
    with pytest.raises(RunCapHit) as hit:
        meter.check(tokens=500)
    assert hit.value.cap == "tokens"
    assert "run token cap reached: 600 of 1000 tokens used" in str(hit.value)
    assert meter.tokens == 600  # nothing was spent on the refused call


def test_wall_time_cap_uses_the_injected_clock() -> None:
    tick = Tick()
    meter = RunMeter(RunCaps(max_wall_s=30), clock=tick)
    meter.check()
    tick.t += 31
    with pytest.raises(RunCapHit, match="run wall-time cap reached") as hit:
        meter.check()
    assert hit.value.cap == "time"


def test_usd_and_external_caps_are_separate() -> None:
    meter = RunMeter(RunCaps(max_usd=Decimal("0.10"), max_external_usd=Decimal("0.02")))
    meter.record(usd=Decimal("0.09"), external_usd=Decimal("0.015"))
    meter.check(usd=Decimal("0.01"))
    with pytest.raises(RunCapHit, match="run model-spend cap reached") as cost:
        meter.check(usd=Decimal("0.02"))
    assert cost.value.cap == "cost"
    with pytest.raises(RunCapHit, match="run external-charges cap reached") as ext:
        meter.check(external_usd=Decimal("0.01"))
    assert ext.value.cap == "external"


def test_cap_hit_payload_is_a_valid_cap_hit_event() -> None:
    meter = RunMeter(RunCaps(max_usd=Decimal("1")))
    meter.record(usd=Decimal("0.95"))
    with pytest.raises(RunCapHit) as hit:
        meter.check(usd=Decimal("0.1"))
    event = {
        "event_id": "5f0c1a6e-7a41-4c79-9a8e-3d1f0c1f2a10", "type": "cap_hit",
        "tenant_id": "acme", "project_id": "p", "run_id": "r", "phase": "build",
        "role": "implementer", "occurred_at": "2030-01-01T00:00:00+00:00",
        "payload": hit.value.payload(),
    }  # fmt: skip
    assert not isinstance(validate_batch([event])[0], list)
    assert meter.summary()["usd"] == "0.95"


def test_remaining_fraction_feeds_budget_aware_routing() -> None:
    meter = RunMeter(RunCaps(max_usd=Decimal("1"), max_tokens=1000))
    meter.record(usd=Decimal("0.3"), tokens=700)
    assert meter.remaining_fraction() == pytest.approx(0.3)


def test_negative_caps_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens must be zero or more"):
        RunCaps(max_tokens=-1)
    with pytest.raises(ValueError, match="max_usd must be zero or more dollars"):
        RunCaps(max_usd=Decimal("-0.01"))
    with pytest.raises(ValueError, match="max_external_usd must be a number of dollars"):
        RunCaps(max_external_usd="lots")  # type: ignore[arg-type]
    assert RunCaps(max_usd="2.5").max_usd == Decimal("2.5")  # type: ignore[arg-type]
