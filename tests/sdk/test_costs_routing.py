"""Model routing, retries and projection gates through the SDK."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

import pytest

from _support import ControlService
from _support.ledger_rows import Sql, run_row
from _support.sdk import Telemetry
from runledger.cost import (
    BreakerBoard,
    BudgetBlocked,
    RetryPolicy,
    RoutingTable,
    RunCaps,
    classify,
    default_pricing,
)
from runledger.sdk import CostOptions, Ledger, RunCapReached

D = Decimal
ROUTING = {
    "roles": {
        "implementer": ["gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"],
        "validator": ["claude-sonnet-4-5"],
    },
    "budget_thresholds": [{"below": 0.5, "step": 1}, {"below": 0.2, "step": 2}],
}
FAST = RetryPolicy(max_attempts=4, initial_s=0.01, max_backoff_s=0.05)


class Overloaded(Exception):
    """A provider's 503."""

    status_code = 503


class BadRequest(Exception):
    """A provider's 400."""

    status_code = 400


def flaky(run_models: list[str], failures: int) -> Callable[[str], str]:
    """A model call that fails ``failures`` times with a 503, then answers."""

    def call(model: str) -> str:
        run_models.append(model)
        from runledger.sdk import current_run

        run = current_run()
        assert run is not None
        with run.model_call(model, prompt_tokens=1000, max_tokens=500) as c:
            if len(run_models) <= failures:
                raise Overloaded("model overloaded")
            c.record(tokens_in=900, tokens_out=400)
        return f"answer from {model}"

    return call


def test_validator_never_downgrades_while_an_implementer_retry_does(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_ledger: Callable[..., Ledger], telemetry: Telemetry, sql: Sql,
) -> None:  # fmt: skip
    table = RoutingTable.from_mapping(ROUTING, pricing=default_pricing())
    ledger = make_ledger(control.url, agent_token("acme", "100"), costs=CostOptions(routing=table))

    tried: list[str] = []
    with ledger.run("acme", "proj-1", "build", "implementer") as impl:
        assert impl.choose_model() == "gpt-4.1"
        assert impl.call_with_retries(flaky(tried, 1), policy=FAST) == "answer from gpt-4.1-mini"
    assert tried == ["gpt-4.1", "gpt-4.1-mini"]  # the retry moved one step down the chain

    with ledger.run("acme", "proj-1", "build", "implementer", attempt=3) as retry:
        assert retry.choose_model() == "gpt-4o-mini"  # the third attempt of the step

    checked: list[str] = []
    caps = RunCaps(max_usd=D("0.03"))
    with ledger.run("acme", "proj-1", "review", "validator", attempt=3, caps=caps) as val:
        with val.model_call("claude-sonnet-4-5") as call:
            call.record(tokens_in=4000, tokens_out=1000)  # $0.027: 10% of the budget left
        assert val.choose_model() == "claude-sonnet-4-5"
        with pytest.raises(RunCapReached):  # a cheaper Validator would have fit; none is used
            val.call_with_retries(flaky(checked, 2), policy=FAST)
        val.partial(summary="reviewed the hero section")
    assert checked == ["claude-sonnet-4-5"]  # refused by the cap, not retried elsewhere

    rechecked: list[str] = []
    with ledger.run("acme", "proj-1", "review", "validator", attempt=2) as val2:
        assert val2.call_with_retries(flaky(rechecked, 2), policy=FAST) == (
            "answer from claude-sonnet-4-5"
        )
    assert rechecked == ["claude-sonnet-4-5"] * 3  # a retried Validator keeps its model
    assert ledger.flush(20)

    assert telemetry.models(impl.run_id) == ["gpt-4.1", "gpt-4.1-mini"]
    assert telemetry.models(val2.run_id) == ["claude-sonnet-4-5"] * 3
    assert run_row(sql, impl.run_id)["model"] == "gpt-4.1-mini"
    assert run_row(sql, val2.run_id)["model"] == "claude-sonnet-4-5"
    stored = sql("SELECT DISTINCT model FROM events WHERE role = 'validator' AND model IS NOT NULL")
    assert stored == [("claude-sonnet-4-5",)]


def test_budget_aware_routing_and_errors_that_are_not_retried(
    make_ledger: Callable[..., Ledger], telemetry: Telemetry,
) -> None:  # fmt: skip
    ledger = make_ledger(
        costs=CostOptions(routing=RoutingTable.from_mapping(ROUTING), enforce_tenant_cap=False)
    )
    with ledger.run("acme", "proj-1", "build", "implementer",
                    caps=RunCaps(max_usd=D("0.01"))) as run:  # fmt: skip
        assert run.choose_model() == "gpt-4.1"
        with run.model_call("gpt-4.1") as call:
            call.record(tokens_in=1000, tokens_out=500)  # $0.006: 40% left
        assert run.choose_model() == "gpt-4.1-mini"
        with run.model_call("gpt-4.1-mini") as call:
            call.record(tokens_in=2500, tokens_out=1000)  # $0.0026: 14% left
        assert run.choose_model() == "gpt-4o-mini"

        calls: list[str] = []

        def bad(model: str) -> str:
            calls.append(model)
            raise BadRequest("invalid request")

        with pytest.raises(BadRequest):
            run.call_with_retries(bad, policy=FAST)
        assert calls == ["gpt-4o-mini"]  # an invalid request is not retried
    assert not classify(RunCapReached(run.partial_result())).retryable


def test_a_model_with_an_open_circuit_is_skipped(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(
        costs=CostOptions(
            routing=RoutingTable.from_mapping({**ROUTING, "downgrade_on_retry": False}),
            enforce_tenant_cap=False,
        )
    )
    ledger.breakers = BreakerBoard(fail_max=2, reset_s=60)
    tried: list[str] = []
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        assert run.call_with_retries(flaky(tried, 2), policy=FAST) == "answer from gpt-4.1-mini"
        # gpt-4.1 failed twice and its circuit opened: new runs start on the next model.
        assert tried == ["gpt-4.1", "gpt-4.1", "gpt-4.1-mini"]
    assert ledger.breakers.is_open("gpt-4.1")
    with ledger.run("acme", "proj-1", "build", "implementer") as run:
        assert run.choose_model() == "gpt-4.1-mini"


def test_projection_warns_at_90_and_blocks_at_100_percent(
    make_ledger: Callable[..., Ledger], caplog: pytest.LogCaptureFixture
) -> None:
    ledger = make_ledger()
    plan = {
        "name": "landing",
        "stages": [
            {"stage": "draft", "role": "implementer", "model": "gpt-4.1", "calls": 2,
             "tokens_in": 1000, "tokens_out": 500},
            {"stage": "review", "role": "validator", "model": "claude-sonnet-4-5",
             "tokens_in": 2000, "tokens_out": 400},
        ],
    }  # fmt: skip
    projection, verdict = ledger.project(plan, budget_usd="1", budget_tokens=10_000)
    assert projection.total_usd == D("0.024") and projection.total_tokens == 5400
    assert verdict.level == "ok" and verdict.messages == []

    with caplog.at_level(logging.WARNING, logger="runledger.sdk"):
        _, verdict = ledger.project(plan, budget_usd="0.025")
    assert verdict.level == "warn"
    assert "Budget warning: projected cost $0.0240 is 96% of the budget $0.0250" in caplog.text

    with pytest.raises(BudgetBlocked) as blocked:
        ledger.project(plan, budget_tokens=5000)
    assert str(blocked.value) == (
        "Budget exceeded: projected tokens 5,400 tokens reaches 108% of the budget 5,000 "
        "tokens; run blocked to prevent a budget overrun"
    )
