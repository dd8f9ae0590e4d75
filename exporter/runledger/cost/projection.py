"""Cost projection before a run, with budget gates that warn at 90% and block at 100%.

A plan (YAML or a mapping) lists the run's stages; each stage is a role calling a model
some number of times with expected token counts::

    name: djp-quick
    stages:
      - {stage: debate, role: implementer, model: gpt-4.1, calls: 3, tokens_in: 1200,
         tokens_out: 600}
      - {stage: judge, role: validator, model: claude-sonnet-4-5, calls: 1, tokens_in: 2500,
         tokens_out: 400, attempts: 2}

``attempts`` budgets retries (the projection is conservative: every attempt is paid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runledger.cost.pricing import PricingTable
from runledger.validation import ConfigError, load_config

__all__ = [
    "BLOCK_AT",
    "EXIT_BUDGET_BLOCKED",
    "EXIT_BUDGET_WARNING",
    "WARN_AT",
    "BudgetBlocked",
    "BudgetVerdict",
    "Plan",
    "PlanError",
    "Projection",
    "StageCost",
    "check_budget",
    "load_plan",
    "project",
]

WARN_AT = Decimal("0.9")
"""A projection at or above 90% of a budget warns."""

BLOCK_AT = Decimal("1.0")
"""A projection at or above 100% of a budget blocks the run."""

EXIT_BUDGET_BLOCKED = 3
"""``runledger cost project`` exit code when a budget blocks the run."""

EXIT_BUDGET_WARNING = 4
"""Exit code for a warning, only with ``--fail-on-warn`` (otherwise a warning exits 0)."""


class PlanError(ConfigError):
    """The plan is invalid; the message names the offending key."""


class Stage(BaseModel):
    """One stage of a plan: a role calling a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(min_length=1)
    role: str = Field(min_length=1)
    model: str = Field(min_length=1)
    calls: int = Field(default=1, ge=0)
    attempts: int = Field(default=1, ge=1, le=20)
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    cached_tokens_in: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _cached(self) -> Stage:
        if self.cached_tokens_in > self.tokens_in:
            raise ValueError("cached_tokens_in: must not exceed tokens_in")
        return self


class Plan(BaseModel):
    """What a run is expected to do, stage by stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "run"
    stages: list[Stage] = Field(min_length=1)


@dataclass(frozen=True)
class StageCost:
    """The projected tokens and dollars of one stage."""

    stage: str
    role: str
    model: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


@dataclass(frozen=True)
class Projection:
    """A run's projected cost: per stage, per role, and in total."""

    plan: str
    stages: list[StageCost]
    by_role: dict[str, Decimal] = field(default_factory=dict)

    @property
    def total_usd(self) -> Decimal:
        return sum((s.cost_usd for s in self.stages), Decimal(0))

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.stages)

    def by_stage(self) -> dict[str, Decimal]:
        """Return projected dollars per stage name (stages may repeat a name)."""
        out: dict[str, Decimal] = {}
        for s in self.stages:
            out[s.stage] = out.get(s.stage, Decimal(0)) + s.cost_usd
        return out

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {
            "plan": self.plan,
            "total_usd": str(self.total_usd),
            "total_tokens": self.total_tokens,
            "by_stage": {k: str(v) for k, v in self.by_stage().items()},
            "by_role": {k: str(v) for k, v in self.by_role.items()},
            "stages": [
                {"stage": s.stage, "role": s.role, "model": s.model, "calls": s.calls,
                 "tokens_in": s.tokens_in, "tokens_out": s.tokens_out,
                 "cost_usd": str(s.cost_usd)}
                for s in self.stages
            ],
        }  # fmt: skip

    def render(self) -> str:
        """Return the human-readable breakdown printed by the CLI."""
        lines = [f"Projected cost breakdown ({self.plan}):"]
        for name, usd in self.by_stage().items():
            lines.append(f"  {name + ' stage:':<22}${usd:.4f}")
        lines.append("  by role: " + ", ".join(f"{r} ${u:.4f}" for r, u in self.by_role.items()))
        lines.append(f"  {'Total cost:':<22}${self.total_usd:.4f}")
        lines.append(f"  {'Total tokens:':<22}{self.total_tokens:,}")
        return "\n".join(lines)


def load_plan(source: str | Path | dict[str, Any]) -> Plan:
    """Load and validate a plan from a YAML file or a mapping."""
    return load_config(Plan, source, what="plan", error=PlanError)


def project(
    plan: Plan | dict[str, Any], pricing: PricingTable, *, tenant_id: str | None = None
) -> Projection:
    """Project a plan's tokens and dollars; unknown models raise UnknownModelError."""
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    stages: list[StageCost] = []
    by_role: dict[str, Decimal] = {}
    for s in plan.stages:
        n = s.calls * s.attempts
        per_call = pricing.cost(
            s.model, tokens_in=s.tokens_in, tokens_out=s.tokens_out,
            cached_tokens_in=s.cached_tokens_in, tenant_id=tenant_id,
        )  # fmt: skip
        cost = per_call * n
        stages.append(StageCost(s.stage, s.role, s.model, n, s.tokens_in * n, s.tokens_out * n,
                                cost))  # fmt: skip
        by_role[s.role] = by_role.get(s.role, Decimal(0)) + cost
    return Projection(plan.name, stages, by_role)


class BudgetBlocked(RuntimeError):
    """The projection reaches 100% of a budget: the run must not start."""

    def __init__(self, verdict: BudgetVerdict) -> None:
        self.verdict = verdict
        super().__init__("; ".join(verdict.messages))


@dataclass(frozen=True)
class BudgetVerdict:
    """The outcome of the budget gates: ok, warn (>= 90%) or block (>= 100%)."""

    level: Literal["ok", "warn", "block"]
    messages: list[str]

    def raise_if_blocked(self) -> None:
        """Raise BudgetBlocked when the run must not start."""
        if self.level == "block":
            raise BudgetBlocked(self)


def check_budget(
    projection: Projection,
    *,
    budget_usd: Decimal | None = None,
    budget_tokens: int | None = None,
) -> BudgetVerdict:
    """Gate a projection on $ and token budgets: warn at 90%, block at 100%."""
    level: Literal["ok", "warn", "block"] = "ok"
    messages = []
    checks: list[tuple[str, Decimal, Decimal, str]] = []
    if budget_usd is not None:
        checks.append(("cost", projection.total_usd, Decimal(budget_usd), "$"))
    if budget_tokens is not None:
        checks.append(("tokens", Decimal(projection.total_tokens), Decimal(budget_tokens), ""))
    for what, value, budget, unit in checks:
        shown_v = f"${value:.4f}" if unit else f"{int(value):,} tokens"
        shown_b = f"${budget:.4f}" if unit else f"{int(budget):,} tokens"
        share = value / budget if budget > 0 else (Decimal(0) if value == 0 else Decimal("inf"))
        if share >= BLOCK_AT and not (budget == 0 and value == 0):
            level = "block"
            messages.append(
                f"Budget exceeded: projected {what} {shown_v} reaches {share:.0%} of the "
                f"budget {shown_b}; run blocked to prevent a budget overrun"
                if share.is_finite()
                else f"Budget exceeded: projected {what} {shown_v} exceeds the budget "
                f"{shown_b}; run blocked to prevent a budget overrun"
            )
        elif share >= WARN_AT:
            if level == "ok":
                level = "warn"
            messages.append(
                f"Budget warning: projected {what} {shown_v} is {share:.0%} of the budget "
                f"{shown_b} (warns at {WARN_AT:.0%}, blocks at {BLOCK_AT:.0%})"
            )
    return BudgetVerdict(level, messages)
