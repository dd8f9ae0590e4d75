"""Events of a run reach the real control service and PostgreSQL with tokens, cost, trace."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from runledger.cost.pricing import UnknownModelError, default_pricing
from runledger.sdk import CostOptions, Ledger, SpoolFullError

Sql = Callable[..., list[tuple[Any, ...]]]


def test_a_run_reaches_the_ledger_with_its_tokens_cost_and_trace(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"])
    pricing = default_pricing()
    with ledger.run("acme", "proj-1", "build", "implementer", playbook="landing") as run:
        with run.model_call("gpt-4.1", provider="openai") as call:
            call.record(tokens_in=1000, tokens_out=200, cached_tokens_in=400)
        run.artifact_written("site/index.html", 1)
        with run.model_call("gpt-4.1") as call:
            call.record(tokens_in=500, tokens_out=50)
        with run.model_call("gpt-4.1", cached=True) as call:
            call.record(tokens_in=500, tokens_out=50)  # served from a cache: no charge
        with run.external_call("maps.geocode", cost_usd=0.01):
            pass
    assert ledger.flush(10)
    expected = (
        pricing.cost("gpt-4.1", tokens_in=1000, tokens_out=200, cached_tokens_in=400)
        + pricing.cost("gpt-4.1", tokens_in=500, tokens_out=50)
        + Decimal("0.01")
    )
    assert run.cost_usd == expected
    rows = sql(
        "SELECT status, tokens_in, tokens_out, cost_usd, trace_id, model, cached, playbook"
        " FROM runs WHERE run_id = %s",
        run.run_id,
    )
    assert rows == [("succeeded", 2000, 300, expected, run.trace_id, "gpt-4.1", True, "landing")]
    types = [
        r[0] for r in sql("SELECT type FROM events WHERE run_id = %s ORDER BY seq", run.run_id)
    ]
    assert types == ["run_started", "artifact_written", "external_call", "run_finished"]
    # Each event carries the deltas since the previous one; the external charge is its own.
    deltas = sql(
        "SELECT type, tokens_in, tokens_out, cost_usd FROM events WHERE run_id = %s"
        " AND (tokens_in > 0 OR cost_usd > 0) ORDER BY seq",
        run.run_id,
    )
    assert deltas == [
        ("artifact_written", 1000, 200, expected - run.cost_usd + run.cost_usd - deltas[2][3]
         - Decimal("0.01")),
        ("external_call", 0, 0, Decimal("0.01")),
        ("run_finished", 1000, 100, pricing.cost("gpt-4.1", tokens_in=500, tokens_out=50)),
    ]  # fmt: skip
    assert sql("SELECT spent_usd FROM caps WHERE tenant_id = 'acme'") == [(expected,)]


def test_an_exception_fails_the_run_with_its_reason_and_propagates(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"])
    with pytest.raises(ValueError, match="model output was empty"):
        with ledger.run("acme", "proj-1", "build", "validator") as run:
            raise ValueError("model output was empty")
    assert ledger.flush(10)
    assert sql("SELECT status, error FROM runs WHERE run_id = %s", run.run_id) == [
        ("failed", "ValueError: model output was empty")
    ]
    assert sql("SELECT kind, reason FROM failures") == [
        ("run_failed", "ValueError: model output was empty")
    ]


def test_explicit_start_finish_and_fail_twin(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"])
    first = ledger.start_run("acme", "proj-1", "publish", "publisher")
    first.publish_done("site/index.html", 2, partial=True, instructions="finish the footer")
    first.finish("partial", summary="published without footer")
    second = ledger.start_run("acme", "proj-1", "publish", "publisher", attempt=2)
    second.fail("webhook timed out", retryable=True)
    with pytest.raises(RuntimeError, match="is not running"):
        second.finish()
    assert ledger.flush(10)
    rows = sql("SELECT run_id, status, attempt FROM runs ORDER BY attempt")
    assert rows == [(first.run_id, "partial", 1), (second.run_id, "failed", 2)]


def test_every_event_method_is_accepted_by_the_ledger(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"])
    queued = ledger.run_queued("acme", "proj-9", "design", "coordinator")
    with ledger.run("acme", "proj-9", "design", "coordinator", run_id=queued) as run:
        run.phase_entered()
        run.artifact_written("brief.md", 1)
        run.validation_failed("headline too long", rule="length", strict=True,
                              artifact_path="brief.md", artifact_version=1)  # fmt: skip
        run.phase_advanced(to_phase="build")
        run.publish_done("brief.md", 1)
        run.cap_hit("tokens", limit=Decimal(1000), spent=Decimal(1200))
        run.user_override("force-advance", actor="user-17")
        run.impersonation_started("support-3", reason="ticket 881")
        run.impersonation_ended("support-3")
        run.proof_requested("proof-1", due_at=datetime.now(UTC) + timedelta(days=2))
        run.proof_completed("proof-1", approved=True)
        run.microsite_visit("site-1", visitor="ab" * 8)
        run.microsite_conversion("site-1")
        run.demo_started("demo-1", location=(51.501476, -0.140634))
        run.demo_completed("demo-1", city="London")
    assert ledger.flush(10)
    assert ledger.dead_letters() == []
    types = {r[0] for r in sql("SELECT DISTINCT type FROM events")}
    from runledger.events import EVENT_TYPES

    # model_call events come from OTLP spans (POST /v1/traces), never from the SDK.
    assert types == set(EVENT_TYPES) - {"external_call", "run_failed", "model_call"}
    city = sql("SELECT payload->>'city' FROM events WHERE type = 'demo_started'")
    assert city == [("London",)]
    assert sql("SELECT status, queued_at IS NOT NULL FROM runs") == [("succeeded", True)]


def test_an_unpriced_model_is_refused_before_the_call_unless_its_cost_is_given(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"])
    called = []
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        with pytest.raises(UnknownModelError, match="unknown model 'house-llm-7b'"):
            with run.model_call("house-llm-7b"):
                called.append(1)
        with run.model_call("house-llm-7b", cost_usd=0.25) as call:
            call.record(tokens_in=10, tokens_out=5)
        with run.model_call("gpt-4.1") as call:
            call.record(tokens_in=10, tokens_out=5, cost_usd="0.5")  # caller's price wins
    assert called == []
    assert ledger.flush(10)
    assert sql("SELECT cost_usd FROM runs") == [(Decimal("0.75"),)]


def test_a_decorated_function_reads_usage_from_the_provider_response(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    from runledger.sdk import model_call

    @model_call("claude-sonnet-4", provider="anthropic", cost_usd=0.002)
    def draft(prompt: str) -> dict[str, Any]:
        return {
            "model": "claude-sonnet-4-20250514",
            "usage": {"input_tokens": 100, "output_tokens": 40, "cache_read_input_tokens": 20},
        }

    @model_call("gpt-4.1", cost_usd=0.001)
    def chat(prompt: str) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 70, "completion_tokens": 7}}

    ledger = make_ledger(control_server, agent["token"])
    with ledger.run("acme", "proj-1", "build", "implementer"):
        draft("hello")
        chat("again")
    with pytest.raises(RuntimeError, match="model_call outside a run"):
        chat("no run")
    assert ledger.flush(10)
    assert sql("SELECT tokens_in, tokens_out, cost_usd FROM runs") == [
        (120 + 70, 47, Decimal("0.003"))
    ]


def test_a_rejected_event_is_dead_lettered_logged_and_never_resent(
    control_server: str,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    make_token: Callable[..., str],
    sql: Sql,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = make_token("admin")
    ledger = make_ledger(control_server, admin)
    with ledger.run("acme", "proj-1", "build", "implementer") as good:
        pass
    bad_id = ledger.run_queued("ghost", "proj-x", "build", "implementer")
    with ledger.run("acme", "proj-1", "build", "validator") as after:
        pass
    with caplog.at_level(logging.ERROR, logger="runledger.sdk"):
        assert ledger.flush(10)
    dead = ledger.dead_letters()
    assert len(dead) == 1
    assert bad_id.encode() in dead[0]["body"]
    assert "unknown tenant 'ghost'" in dead[0]["errors"]
    assert "moved to the spool's dead_letter table" in caplog.text
    assert ledger.pending() == 0
    assert {r[0] for r in sql("SELECT DISTINCT run_id FROM events")} == {good.run_id, after.run_id}


def test_an_event_of_another_tenant_is_dead_lettered_and_the_batch_still_lands(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql,
    make_tenant: Callable[..., str],
) -> None:  # fmt: skip
    make_tenant("globex")
    ledger = make_ledger(control_server, agent["token"])  # an agent token of acme
    ledger.run_queued("globex", "proj-g", "build", "implementer")
    mine = ledger.run_queued("acme", "proj-1", "build", "implementer")
    assert ledger.flush(10)
    assert "may write only tenant 'acme'" in ledger.dead_letters()[0]["errors"]
    assert sql("SELECT run_id FROM events") == [(mine,)]


def test_invalid_events_are_refused_at_the_call_with_the_reason(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(None)
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        with pytest.raises(ValueError, match=r"invalid artifact_written event: artifact_version"):
            run.artifact_written("a.md", 0)
        with pytest.raises(ValueError, match="unknown event type 'coffee_break'"):
            run.emit("coffee_break")
        with pytest.raises(ValueError, match="personal data"):
            run.emit("phase_entered", payload={"full_name": "Ada"})


def test_dollar_amounts_are_checked_where_they_are_given(
    make_ledger: Callable[..., Ledger],
) -> None:
    with pytest.raises(
        ValueError, match=r"^RUNLEDGER_OFFLINE_ALLOWANCE_USD='-1' must be zero or more dollars$"
    ):
        make_ledger(None, environ={"RUNLEDGER_OFFLINE_ALLOWANCE_USD": "-1"})
    with pytest.raises(
        ValueError, match=r"^offline_allowance_usd must be a number of dollars, not 'lots'$"
    ):
        make_ledger(None, costs=CostOptions(offline_allowance_usd="lots"))
    ledger = make_ledger(None, costs=CostOptions(enforce_tenant_cap=False))  # no ledger to cap
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        with pytest.raises(ValueError, match=r"^cost_usd must be zero or more dollars$"):
            run.model_call("gpt-4.1", cost_usd=-1)
        with pytest.raises(ValueError, match=r"^cost_usd must be a number of dollars, not 'abc'$"):
            with run.model_call("gpt-4.1") as call:
                call.record(tokens_in=10, tokens_out=5, cost_usd="abc")
        with run.model_call("gpt-4.1", cost_usd=0.1 + 0.2) as call:  # 0.30000000000000004
            call.record(tokens_in=10, tokens_out=5)
    assert call.cost_usd == Decimal("0.300000001")  # rounded up to the ledger's precision


def test_a_full_spool_raises_a_clear_error_after_waiting(
    tmp_path: Any, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger(
        None,
        environ={"RUNLEDGER_SPOOL_MAX_EVENTS": "3", "RUNLEDGER_SPOOL_FULL_TIMEOUT": "0.2"},
    )
    for _ in range(3):
        ledger.run_queued("acme", "proj-1", "build", "implementer")
    with pytest.raises(SpoolFullError, match=r"is full: it holds 3 records \(limit 3\)"):
        ledger.run_queued("acme", "proj-1", "build", "implementer")
    assert ledger.pending() == 3


def test_prompt_audit_stores_redacted_prompts_once(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"], prompt_audit=True)
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        with run.model_call("gpt-4.1") as call:
            call.audit(
                "Summarise. My key is sk-proj-Qw3rTy9UiOp4AsDfGhJkL1ZxCvBnM0qW, mail a@b.example",
                "Done: contact ops@example.com",
            )
            call.record(tokens_in=5, tokens_out=5)
    assert ledger.flush(10)
    rows = sql("SELECT run_id, model, prompt_redacted, response_redacted FROM prompt_audit")
    assert rows == [(
        run.run_id, "gpt-4.1",
        "Summarise. My key is [REDACTED:openai_key], mail [REDACTED:email]",
        "Done: contact [REDACTED:email]",
    )]  # fmt: skip
    record = {
        "audit_id": "again",
        "tenant_id": "acme",
        "run_id": run.run_id,
        "prompt": rows[0][2],
        "created_at": sql("SELECT created_at FROM prompt_audit")[0][0].isoformat(),
    }
    answer = requests.post(
        control_server + "/v1/prompt-audit",
        json={"records": [record]},
        headers={"Authorization": f"Bearer {agent['token']}"},
        timeout=10,
    ).json()
    assert answer["results"][0]["status"] == "duplicate"
    assert len(sql("SELECT 1 FROM prompt_audit")) == 1


def test_prompt_audit_is_off_unless_enabled(
    control_server: str, agent: dict[str, str], make_ledger: Callable[..., Ledger], sql: Sql
) -> None:
    ledger = make_ledger(control_server, agent["token"])
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        run.prompt_audit("nothing to see")
    assert ledger.flush(10)
    assert sql("SELECT count(*) FROM prompt_audit") == [(0,)]
