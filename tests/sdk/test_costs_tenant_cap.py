"""The tenant daily cap through the SDK: runs draw from a budget lease of the real control
service, are refused at 100% with an explained error and ``cap_hit``, tag their settled cost
with the lease, and the ledger's cap never counts a dollar twice or goes over the cap."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from _support import ControlService, caps_row
from _support.ledger_rows import (
    Sql,
    event_cost,
    one,
    run_events,
    run_row,
)
from _support.sdk import Telemetry
from runledger.cost import LedgerNotConfigured, LedgerUnavailable
from runledger.exporter import EventTailer, ExporterConfig
from runledger.sdk import CostOptions, Ledger, RunCapReached
from runledger.store import Database

D = Decimal


def test_tenant_cap_refuses_the_call_that_would_cross_it(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "0.05"))  # capped by default
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
            costs=CostOptions(on_ledger_down="fail_open",
                              offline_allowance_usd="0.40"),
        )  # fmt: skip
        run = ledger.start_run("acme", "proj-1", "build", "implementer")
        priced = D("0.2")
        with run.model_call("gpt-4.1", cost_usd=priced) as call:  # from the run's $0.50 lease
            call.record(tokens_in=1000, tokens_out=100)
        control.stop()
        with run.model_call("gpt-4.1", cost_usd=priced) as call:  # the lease still has room
            call.record(tokens_in=1000, tokens_out=100)
        lease = run.costs.budget.lease_id  # type: ignore[union-attr]
        assert lease is not None
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
            costs=CostOptions(on_ledger_down="fail_open",
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
    ledger = make_ledger(control.url, agent_token("acme", "0.10"))
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


NO_CONTROL_SERVICE = (
    "the tenant daily cap is enforced by default and this Ledger has no control service to "
    "draw its budget leases from: set RUNLEDGER_URL and RUNLEDGER_TOKEN (or pass url= and "
    "token=, or CostOptions(lease_transport=)); for a tenant without a cap, turn enforcement "
    "off with RUNLEDGER_ENFORCE_CAPS=0 or CostOptions(enforce_tenant_cap=False)"
)

UNCAPPED_WARNING = (
    "runledger: the tenant daily cap is not enforced in this process "
    "(RUNLEDGER_ENFORCE_CAPS=0 or CostOptions(enforce_tenant_cap=False)): its runs can "
    "spend past their tenant's daily cap; the ledger still records what they spend and "
    "counts them in runledger_sdk_uncapped_runs_total. To enforce the cap again, unset "
    "RUNLEDGER_ENFORCE_CAPS (or set it to 1) and drop enforce_tenant_cap=False."
)


def test_the_tenant_cap_is_on_unless_turned_off_and_uncapped_runs_are_counted(
    control: ControlService, agent_token: Callable[[str, str], str], db: Database,
    make_ledger: Callable[..., Ledger], sql: Sql,
) -> None:  # fmt: skip
    token = agent_token("acme", "100")
    off_by_env = {"RUNLEDGER_ENFORCE_CAPS": "0"}
    ledgers = {
        "implementer": make_ledger(control.url, token),
        "validator": make_ledger(control.url, token, environ=off_by_env),
        "coordinator": make_ledger(
            control.url,
            token,
            environ={"RUNLEDGER_ENFORCE_CAPS": "1"},
            costs=CostOptions(enforce_tenant_cap=False),
        ),
    }
    runs = {}
    for role, ledger in ledgers.items():
        with ledger.run("acme", "proj-1", "build", role) as run:
            with run.model_call("gpt-4.1") as call:
                call.record(tokens_in=1000, tokens_out=100)
        assert ledger.flush(20)
        runs[role] = run.run_id

    capped = run_events(sql, runs["implementer"])
    (lease,) = sql("SELECT lease_id FROM cap_leases WHERE holder = %s", runs["implementer"])[0]
    assert capped[-1]["payload"]["lease_id"] == lease  # drawn from the tenant's cap
    assert one(capped, "run_started")["payload"] == {}
    for role in ("validator", "coordinator"):
        events = run_events(sql, runs[role])
        assert one(events, "run_started")["payload"] == {"uncapped": True}
        assert "lease_id" not in events[-1]["payload"]
    assert sql("SELECT count(*) FROM cap_leases") == [(1,)]  # only the capped run took one

    registry = CollectorRegistry()
    EventTailer(db, config=ExporterConfig(start_at="beginning"), registry=registry).poll()
    counted = {
        role: registry.get_sample_value(
            "runledger_sdk_uncapped_runs_total", {"tenant": "acme", "phase": "build", "role": role}
        )
        for role in ledgers
    }
    assert counted == {"implementer": 0.0, "validator": 1.0, "coordinator": 1.0}


def test_an_unclear_enforce_caps_value_is_refused(make_ledger: Callable[..., Ledger]) -> None:
    with pytest.raises(ValueError) as bad:
        make_ledger(environ={"RUNLEDGER_ENFORCE_CAPS": "maybe"})
    assert str(bad.value) == (
        "RUNLEDGER_ENFORCE_CAPS='maybe' must be 1 (enforce the tenant daily cap, the default) "
        "or 0 (do not enforce it)"
    )


def test_without_a_control_service_spending_is_refused_naming_the_opt_out(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger()  # no RUNLEDGER_URL: events wait in the spool
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        run.artifact_written("notes.md", 1)  # a run that spends nothing works
        with run.model_call("gpt-4.1", cost_usd=0) as call:  # so does a call known to be free
            call.record(tokens_in=10, tokens_out=1)
        with pytest.raises(LedgerNotConfigured) as refused:
            with run.model_call("gpt-4.1", max_tokens=100):
                raise AssertionError("a model call spent without a cap to draw from")
        assert str(refused.value) == NO_CONTROL_SERVICE
        with pytest.raises(LedgerNotConfigured, match="RUNLEDGER_ENFORCE_CAPS=0"):
            with run.external_call("maps.geocode", cost_usd="0.005"):
                raise AssertionError("an external charge was made without a cap to draw from")
    assert (run.status, run.model_calls, run.cost_usd) == ("succeeded", 1, 0)
    assert ledger.pending() == 3  # run_started, artifact_written, run_finished


def test_turning_the_cap_off_is_warned_once_per_process(tmp_path: Path) -> None:
    script = (
        "import logging\n"
        "from runledger.sdk import CostOptions, DeliveryOptions, Ledger\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "def make(name, **kw):\n"
        f"    spool = DeliveryOptions(spool_path={str(tmp_path)!r} + f'/{{name}}.db')\n"
        "    env = {'OTEL_SDK_DISABLED': '1', **kw.pop('environ', {})}\n"
        "    Ledger(None, delivery=spool, environ=env, **kw).close(timeout=0)\n"
        "make('capped')\n"
        "print('--- turned off ---', flush=True)\n"
        "make('env', environ={'RUNLEDGER_ENFORCE_CAPS': 'off'})\n"
        "make('options', costs=CostOptions(enforce_tenant_cap=False))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    warnings = [line for line in done.stderr.splitlines() if "tenant daily cap" in line]
    assert warnings == [UNCAPPED_WARNING]
    assert done.stdout == "--- turned off ---\n"


def test_a_run_takes_its_lease_as_it_starts_and_gives_it_back_if_it_cannot_start(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "100"))
    run = ledger.start_run("acme", "proj-1", "build", "implementer")
    assert sql("SELECT holder, status, reserved_usd FROM cap_leases") == [
        (run.run_id, "open", D("0.5"))
    ]
    run.finish()
    with pytest.raises(ValueError, match="invalid run_started event: project_id"):
        ledger.start_run("acme", "not a project id!", "build", "implementer", run_id="run-bad")
    assert sql("SELECT status, reserved_usd FROM cap_leases WHERE holder = 'run-bad'") == [
        ("closed", 0)
    ]
    assert caps_row(sql, "acme")["reserved"] == 0
