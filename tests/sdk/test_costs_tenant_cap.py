"""The tenant daily cap through the SDK: runs draw from a budget lease of the real control
service, are refused at 100% with an explained error and ``cap_hit``, tag their settled cost
with the lease, and the ledger's cap never counts a dollar twice or goes over the cap."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from _support import ControlService, caps_row
from _support.ledger_rows import (
    Sql,
    event_cost,
    one,
    run_events,
    run_row,
)
from _support.sdk import Telemetry
from runledger.cost import LedgerUnavailable
from runledger.sdk import CostOptions, Ledger, RunCapReached

D = Decimal


def test_tenant_cap_refuses_the_call_that_would_cross_it(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(
        control.url, agent_token("acme", "0.05"), costs=CostOptions(enforce_tenant_cap=True)
    )
    calls = 0
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        with pytest.raises(RunCapReached) as stop:
            while True:
                # Reserved at $0.012 (2,000 in, 1,000 out), settled at $0.0084.
                with run.model_call("gpt-4.1", prompt_tokens=2000, max_tokens=1000) as call:
                    call.record(tokens_in=1800, tokens_out=600)
                calls += 1
        run.partial("site/index.html", 1, f"built {calls} sections", missing="the footer")
    message = str(stop.value)
    assert stop.value.cap == "tenant_daily"
    assert "tenant 'acme' daily cap reached: spent $0.0420 of its $0.05 daily cap today" in message
    # The lease still holds $0.0036 of the call's $0.012 bound; the ledger is asked for the rest.
    assert "$0.0080 left, and this call needs $0.0084" in message
    assert "POST /v1/caps/acme/raises" in message and "runledger cost raise acme" in message
    assert calls == 5 and len(telemetry.models(run.run_id)) == 5
    assert ledger.flush(20)

    events = run_events(sql, run.run_id)
    cap = one(events, "cap_hit")["payload"]
    assert (cap["cap"], D(cap["limit"]), D(cap["spent"])) == ("tenant_daily", D("0.05"), D("0.042"))
    finished = one(events, "run_finished")["payload"]
    assert finished["status"] == "partial" and finished["cap"] == "tenant_daily"
    assert (
        "stopped by the tenant's daily cap ($0.0420 of $0.05 spent today (UTC))"
        in (finished["summary"])
    )
    assert run_row(sql, run.run_id)["status"] == "partial"

    # A second run of the tenant is refused too, before it spends anything.
    with ledger.run("acme", "proj-2", "build", "implementer") as second:
        with pytest.raises(RunCapReached, match="daily cap reached"):
            with second.model_call("gpt-4.1", prompt_tokens=2000, max_tokens=1000):
                raise AssertionError("the model was called over the cap")
        second.partial(summary="nothing built")
    assert ledger.flush(20)
    row = caps_row(sql, "acme")
    assert row["spend"] == event_cost(sql, "acme") == D("0.042") <= row["cap"]
    assert row["reserved"] == 0 and row["blocked"]
    # Every lease was closed and nothing leaked.
    assert sql("SELECT count(*) FROM cap_leases WHERE status = 'open'") == [(0,)]


def test_settled_cost_is_tagged_with_its_lease_and_counted_once(
    db_url: str, agent_token: Callable[[str, str], str], make_ledger: Callable[..., Ledger],
    sql: Sql,
) -> None:  # fmt: skip
    """Leased, offline and leased-again spend in one run: one event never mixes two leases."""
    control = ControlService(db_url)
    control.start()
    try:
        ledger = make_ledger(
            control.url, agent_token("acme", "5"),
            costs=CostOptions(enforce_tenant_cap=True, on_ledger_down="fail_open",
                              offline_allowance_usd="0.40"),
        )  # fmt: skip
        run = ledger.start_run("acme", "proj-1", "build", "implementer")
        priced = D("0.2")
        for _ in range(2):  # the first lease holds $0.50: two calls, no round trip
            with run.model_call("gpt-4.1", cost_usd=priced) as call:
                call.record(tokens_in=1000, tokens_out=100)
        lease = run.costs.budget.lease_id  # type: ignore[union-attr]
        assert lease is not None
        control.stop()
        for _ in range(2):  # the lease is low and the ledger is down: offline allowance
            with run.model_call("gpt-4.1", cost_usd=priced) as call:
                call.record(tokens_in=1000, tokens_out=100)
        with pytest.raises(LedgerUnavailable):  # the allowance is used up
            with run.model_call("gpt-4.1", cost_usd=priced):
                raise AssertionError("spent beyond the offline allowance")
        control.start()
        with run.model_call("gpt-4.1", cost_usd=priced) as call:  # back on the same lease
            call.record(tokens_in=1000, tokens_out=100)
        run.artifact_written("site/index.html", 1)
        run.finish()
        assert ledger.flush(20)
    finally:
        control.stop()

    events = [e for e in run_events(sql, run.run_id) if e["cost"] > 0]
    tags = [e["payload"].get("lease_id") for e in events]
    assert tags == [lease, None, lease]
    assert [e["cost"] for e in events] == [D("0.4"), D("0.4"), D("0.2")]
    assert [e["type"] for e in events] == ["external_call", "external_call", "artifact_written"]
    assert all(e["payload"]["service"] == "runledger.usage" for e in events[:2])
    leases = sql("SELECT lease_id, status, spent_usd FROM cap_leases")
    assert leases == [(lease, "closed", D("0.6"))]
    row = caps_row(sql, "acme")
    # The cap's account: leased dollars once (settled), offline dollars once (events).
    assert row["settled"] == row["leased"] == D("0.6")
    assert row["spent"] == event_cost(sql, "acme") == D("1.0")
    assert row["spend"] == D("1.0") and row["reserved"] == 0
    assert run_row(sql, run.run_id)["cost"] == D("1.0")


def test_publisher_fails_closed_while_another_role_spends_its_offline_allowance(
    db_url: str, agent_token: Callable[[str, str], str], make_ledger: Callable[..., Ledger],
    telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    control = ControlService(db_url)
    control.start()
    try:
        ledger = make_ledger(
            control.url, agent_token("acme", "100"),
            costs=CostOptions(enforce_tenant_cap=True, on_ledger_down="fail_open",
                              offline_allowance_usd="0.02"),
        )  # fmt: skip
        control.stop()
        with pytest.raises(LedgerUnavailable, match="cannot reach the ledger"):
            with ledger.run("acme", "proj-1", "publish", "publisher") as publisher:
                with publisher.external_call("cdn.deploy", cost_usd=D("0.001")):
                    raise AssertionError("the Publisher spent without the ledger")
        implemented = 0
        with pytest.raises(LedgerUnavailable):
            with ledger.run("acme", "proj-1", "build", "implementer") as implementer:
                while True:
                    with implementer.model_call("gpt-4.1-mini", cost_usd=D("0.005")) as call:
                        call.record(tokens_in=5000, tokens_out=1000)
                    implemented += 1
        assert implemented == 4  # $0.02 of offline allowance, $0.005 a call
        control.start()
        assert ledger.flush(20)
    finally:
        control.stop()

    published = run_events(sql, publisher.run_id)
    assert [e["type"] for e in published] == ["run_started", "run_failed"]
    assert published[1]["payload"]["error_class"] == "LedgerUnavailable"
    assert run_row(sql, publisher.run_id)["cost"] == 0
    assert telemetry.models(implementer.run_id) == ["gpt-4.1-mini"] * 4
    assert run_row(sql, implementer.run_id)["cost"] == D("0.02")
    assert all("lease_id" not in e["payload"] for e in run_events(sql, implementer.run_id))
    assert caps_row(sql, "acme")["spend"] == D("0.02")
    assert sql("SELECT count(*) FROM cap_leases") == [(0,)]


def test_publish_partial_instead_of_spending_over_the_cap(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(
        control.url, agent_token("acme", "0.10"), costs=CostOptions(enforce_tenant_cap=True)
    )
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        with run.external_call("render.farm", cost_usd=D("0.06")):
            pass
    with ledger.run("acme", "proj-1", "publish", "publisher") as publisher:
        with publisher.external_call("cdn.upload", cost_usd=D("0.01"), summary="home page"):
            pass
        try:
            with publisher.external_call("cdn.upload", cost_usd=D("0.05"), summary="gallery"):
                raise AssertionError("published over the cap")
        except RunCapReached:
            publisher.partial("site/index.html", 3, "published the home page",
                              missing="the gallery pages")  # fmt: skip
    assert ledger.flush(20)

    events = run_events(sql, publisher.run_id)
    assert [e["type"] for e in events] == [
        "run_started", "external_call", "cap_hit", "publish_done", "run_finished",
    ]  # fmt: skip
    done = one(events, "publish_done")
    assert done["artifact_path"] == "site/index.html" and done["artifact_version"] == 3
    assert done["payload"]["partial"] is True
    instructions = done["payload"]["instructions"]
    assert instructions.startswith("Not published: the gallery pages (stopped by the tenant's "
                                   "daily cap ($0.0700 of $0.10 spent today (UTC))).")  # fmt: skip
    assert "one-click 72-hour raise" in instructions and "/v1/caps/acme/raises" in instructions
    assert one(events, "cap_hit")["payload"]["cap"] == "tenant_daily"
    assert run_row(sql, publisher.run_id)["status"] == "partial"
    row = caps_row(sql, "acme")
    assert row["spend"] == event_cost(sql, "acme") == D("0.07") <= row["cap"]
