"""Per-run caps through the SDK: each cap stops the run before it spends, hands the agent a
partial result, and the ledger (real PostgreSQL, real control service) records cap_hit, the
partial artifact and a run ending as ``partial`` with its summary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from _support import ControlService
from _support.ledger_rows import Sql, one, run_events, run_row
from _support.sdk import Telemetry
from runledger.cost import RunCaps
from runledger.sdk import CostOptions, Ledger, RunCapReached

D = Decimal
SECTIONS = ["hero", "features", "testimonials", "pricing", "faq"]


def test_token_cap_ends_the_run_with_a_partial_artifact_and_summary(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    # The run's own caps: the tenant cap's lease would tag the events it carries usage on.
    ledger = make_ledger(
        control.url, agent_token("acme", "100"), costs=CostOptions(enforce_tenant_cap=False)
    )
    built: list[str] = []
    with ledger.run("acme", "proj-1", "build", "implementer", playbook="landing",
                    caps=RunCaps(max_tokens=3000)) as run:  # fmt: skip
        with pytest.raises(RunCapReached) as stop:
            for section in SECTIONS:
                with run.model_call("gpt-4.1", prompt_tokens=500, max_tokens=500) as call:
                    call.record(tokens_in=450, tokens_out=250)
                built.append(section)
        run.partial(
            "site/index.html", 2, f"built {len(built)} of {len(SECTIONS)} sections",
            missing=", ".join(SECTIONS[len(built):]),
        )  # fmt: skip
    # 3 calls used 2,100 tokens; a 4th could use 1,000 more and would cross 3,000.
    assert built == ["hero", "features", "testimonials"]
    assert telemetry.models(run.run_id) == ["gpt-4.1"] * 3  # no 4th model call was made
    assert stop.value.cap == "tokens"
    assert "run token cap reached: 2100 of 3000 tokens used" in str(stop.value)
    assert ledger.flush(20)

    events = run_events(sql, run.run_id)
    assert one(events, "cap_hit")["payload"] == {"cap": "tokens", "limit": "3000",
                                                 "spent": "2100"}  # fmt: skip
    artifact = one(events, "artifact_written")
    assert (artifact["artifact_path"], artifact["artifact_version"]) == ("site/index.html", 2)
    assert artifact["payload"] == {"partial": True}
    finished = one(events, "run_finished")["payload"]
    assert finished["status"] == "partial" and finished["cap"] == "tokens"
    assert finished["missing"] == "pricing, faq"
    summary = finished["summary"]
    assert summary.startswith("built 3 of 5 sections; missing: pricing, faq; ")
    assert "stopped by the run's token cap (2,100 of 3,000 tokens used" in summary
    assert "on 3 model calls and 2,100 tokens" in summary
    row = run_row(sql, run.run_id)
    assert row["status"] == "partial"
    assert (row["tokens_in"], row["tokens_out"]) == (1350, 750)


def test_wall_time_cap_stops_the_next_call_with_the_explicit_twin(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "100"))
    run = ledger.start_run("acme", "proj-1", "research", "implementer",
                           caps=RunCaps(max_wall_s=0.4))  # fmt: skip
    with run.model_call("gpt-4.1-mini") as call:
        call.record(tokens_in=1000, tokens_out=200)
    time.sleep(0.5)
    try:
        with run.model_call("gpt-4.1-mini") as call:
            call.record(tokens_in=1000, tokens_out=200)
        raise AssertionError("the wall-time cap did not stop the run")
    except RunCapReached as stop:
        assert stop.partial.cap == "time"
        run.partial("research/notes.md", 1, "summarised 1 of 2 sources", missing="source 2")
    # Once stopped, the run makes no further model calls.
    assert telemetry.models(run.run_id) == ["gpt-4.1-mini"]
    assert ledger.flush(20)

    events = run_events(sql, run.run_id)
    cap = one(events, "cap_hit")["payload"]
    assert cap["cap"] == "time" and cap["limit"] == "0.4" and D(cap["spent"]) >= D("0.4")
    assert one(events, "artifact_written")["artifact_path"] == "research/notes.md"
    finished = one(events, "run_finished")["payload"]
    assert finished["status"] == "partial"
    assert "stopped by the run's wall-time cap (" in finished["summary"]
    assert run_row(sql, run.run_id)["status"] == "partial"


def test_model_dollar_cap_is_never_crossed(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "100"))
    cap = D("0.05")
    calls = 0
    with ledger.run("acme", "proj-1", "build", "implementer", caps=RunCaps(max_usd=cap)) as run:
        try:
            while True:
                # Upper bound $0.012 (2,000 in, 1,000 out); actual $0.0084.
                with run.model_call("gpt-4.1", prompt_tokens=2000, max_tokens=1000) as call:
                    call.record(tokens_in=1800, tokens_out=600)
                calls += 1
        except RunCapReached as stop:
            assert stop.cap == "cost"
            assert "run model-spend cap reached" in str(stop)
            run.partial("site/index.html", 1, f"drafted {calls} pages", missing="the rest")
    assert ledger.flush(20)
    events = run_events(sql, run.run_id)
    spent = sum((e["cost"] for e in events), D(0))
    assert spent == D("0.0084") * calls and spent <= cap
    assert calls == 5  # 5 x $0.0084 = $0.042; a 6th could cost $0.012 and cross $0.05
    payload = one(events, "cap_hit")["payload"]
    assert (payload["cap"], D(payload["limit"]), D(payload["spent"])) == ("cost", cap, spent)
    assert run_row(sql, run.run_id)["status"] == "partial"
    assert (
        "stopped by the run's model-spend cap ($0.0420 of $0.0500 spent"
        in (one(events, "run_finished")["payload"]["summary"])
    )


def test_external_charges_cap_and_an_uncaught_stop(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "100"))
    geocoded = 0
    with pytest.raises(RunCapReached) as stop:
        with ledger.run("acme", "proj-1", "research", "implementer", playbook="maps",
                        caps=RunCaps(max_external_usd=D("0.05"))) as run:  # fmt: skip
            for _ in range(10):
                with run.external_call("maps.geocode", cost_usd=D("0.02")):
                    geocoded += 1
    assert geocoded == 2 and stop.value.cap == "external"
    assert run.status == "partial"  # an escaping stop ends the run as partial, not failed
    assert ledger.flush(20)
    events = run_events(sql, run.run_id)
    assert [e["type"] for e in events] == [
        "run_started", "external_call", "external_call", "cap_hit", "run_finished",
    ]  # fmt: skip
    assert sum(e["cost"] for e in events) == D("0.04")
    finished = one(events, "run_finished")["payload"]
    assert finished["summary"].startswith(
        "no partial artifact was written; stopped by the run's external-charges cap "
        "($0.0400 of $0.0500 spent, the next call needed up to $0.0200)"
    )
    assert run_row(sql, run.run_id)["status"] == "partial"


def test_concurrent_calls_of_one_run_cannot_cross_a_cap_together(
    make_ledger: Callable[..., Ledger], telemetry: Telemetry
) -> None:
    ledger = make_ledger(costs=CostOptions(enforce_tenant_cap=False))  # no ledger to cap
    inside = threading.Barrier(4, timeout=10)  # three calls in flight, and the test
    results: list[str] = []

    with ledger.run("acme", "proj-1", "build", "implementer",
                    caps=RunCaps(max_tokens=3000)) as run:  # fmt: skip

        def call() -> None:
            try:
                with run.model_call("gpt-4.1", prompt_tokens=500, max_tokens=500) as c:
                    inside.wait()
                    inside.wait()
                    c.record(tokens_in=500, tokens_out=500)
                results.append("called")
            except RunCapReached:
                results.append("refused")

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        inside.wait()  # three calls hold 3,000 tokens of estimates between them
        with pytest.raises(RunCapReached, match="run token cap reached"):
            with run.model_call("gpt-4.1", prompt_tokens=500, max_tokens=500):
                raise AssertionError("a fourth call went past the cap")
        inside.wait()
        for t in threads:
            t.join(10)
        run.partial(summary="three calls")
    assert results == ["called"] * 3
    assert telemetry.models(run.run_id) == ["gpt-4.1"] * 3
    assert run.tokens_in + run.tokens_out == 3000
