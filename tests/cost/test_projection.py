"""Cost projection with a breakdown by stage and role, and the 90%/100% budget gates."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from runledger.cli import main
from runledger.cost.pricing import default_pricing
from runledger.cost.projection import BudgetBlocked, PlanError, check_budget, load_plan, project

PLAN = """
name: djp-quick
stages:
  - {stage: debate, role: implementer, model: gpt-4o, calls: 2, tokens_in: 1000, tokens_out: 500}
  - {stage: judge, role: validator, model: claude-sonnet-4-5, calls: 1, tokens_in: 2000,
     tokens_out: 400, attempts: 2}
"""
# debate: 2 x (1000*2.5 + 500*10)/1e6 = 2 x 0.0075 = 0.015
# judge: 2 x (2000*3 + 400*15)/1e6 = 2 x 0.012 = 0.024
TOTAL = Decimal("0.039")
TOKENS = 2 * 1500 + 2 * 2400


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yml"
    path.write_text(PLAN)
    return path


def test_projection_breaks_down_by_stage_and_role(plan_file: Path) -> None:
    proj = project(load_plan(plan_file), default_pricing())
    assert proj.total_usd == TOTAL
    assert proj.total_tokens == TOKENS
    assert proj.by_stage() == {"debate": Decimal("0.015"), "judge": Decimal("0.024")}
    assert proj.by_role == {"implementer": Decimal("0.015"), "validator": Decimal("0.024")}


@pytest.mark.parametrize(
    ("budget", "level"),
    [
        (Decimal("1"), "ok"),
        (Decimal("0.0433"), "warn"),
        (TOTAL, "block"),
        (Decimal("0.01"), "block"),
    ],
)
def test_usd_gate_warns_at_90_and_blocks_at_100(
    plan_file: Path, budget: Decimal, level: str
) -> None:
    proj = project(load_plan(plan_file), default_pricing())
    assert check_budget(proj, budget_usd=budget).level == level


def test_token_gate(plan_file: Path) -> None:
    proj = project(load_plan(plan_file), default_pricing())
    assert check_budget(proj, budget_tokens=TOKENS * 2).level == "ok"
    warn = check_budget(proj, budget_tokens=int(TOKENS / 0.95))
    assert warn.level == "warn"
    assert "Budget warning: projected tokens 7,800 tokens is 95% of the budget" in warn.messages[0]
    blocked = check_budget(proj, budget_tokens=TOKENS - 1)
    with pytest.raises(BudgetBlocked, match="Budget exceeded: projected tokens 7,800 tokens"):
        blocked.raise_if_blocked()


def test_cli_within_budget_exits_0_and_prints_breakdown(plan_file: Path) -> None:
    result = CliRunner().invoke(main, ["cost", "project", str(plan_file), "--budget-usd", "1"])
    assert result.exit_code == 0, result.output
    assert "debate stage:" in result.output and "$0.0150" in result.output
    assert "Total cost:" in result.output and "$0.0390" in result.output
    assert "Total tokens:" in result.output and "7,800" in result.output


def test_cli_block_exits_3_with_explicit_message(plan_file: Path) -> None:
    result = CliRunner().invoke(main, ["cost", "project", str(plan_file), "--budget-usd", "0.0001"])
    assert result.exit_code == 3
    assert (
        "Budget exceeded: projected cost $0.0390 reaches 39000% of the budget $0.0001; "
        "run blocked to prevent a budget overrun" in result.output
    )
    assert "Run aborted to prevent a budget overrun." in result.output


def test_cli_warning_exits_0_or_4_with_fail_on_warn(plan_file: Path) -> None:
    args = ["cost", "project", str(plan_file), "--budget-usd", "0.042"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "Budget warning: projected cost $0.0390 is 93% of the budget $0.0420" in result.output
    assert CliRunner().invoke(main, [*args, "--fail-on-warn"]).exit_code == 4


def test_cli_token_budget_blocks(plan_file: Path) -> None:
    result = CliRunner().invoke(
        main, ["cost", "project", str(plan_file), "--budget-tokens", "5000", "--json"]
    )
    assert result.exit_code == 3
    body = json.loads(result.stdout)
    assert body["budget"]["level"] == "block"
    assert body["total_tokens"] == TOKENS


def test_cli_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text("stages:\n  - {stage: s, role: r, model: gpt-x, tokens_in: 1, tokens_out: 1}\n")
    result = CliRunner().invoke(main, ["cost", "project", str(path)])
    assert result.exit_code == 2
    assert "unknown model 'gpt-x'" in result.output


def test_malformed_plan_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text(
        "stages:\n  - {stage: s, role: r, model: gpt-4o, tokens_in: -1, tokens_out: 1}\n"
    )
    with pytest.raises(PlanError, match=r"stages\[0\]\.tokens_in: must be >= 0"):
        load_plan(path)


def test_cli_check_config_rejects_bad_routing(tmp_path: Path) -> None:
    path = tmp_path / "routing.yml"
    path.write_text("roles:\n  validator: [gpt-4o, gpt-4o-mini]\n")
    result = CliRunner().invoke(main, ["cost", "check-config", "--routing", str(path)])
    assert result.exit_code == 2
    assert "roles.validator: the Validator never downgrades" in result.output
