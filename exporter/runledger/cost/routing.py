"""Model routing: per-role chains of cheaper models for retries and for a shrinking budget.

The routing file (YAML)::

    roles:
      implementer: [gpt-4.1, gpt-4.1-mini, gpt-4o-mini]   # first is the preferred model
      validator: [claude-sonnet-4-5]                        # the Validator never downgrades
    default: [gpt-4o-mini]                                  # roles not listed
    downgrade_on_retry: true
    budget_thresholds:                                      # remaining share of the run budget
      - {below: 0.5, step: 1}
      - {below: 0.2, step: 2}

A retry may move one step down the chain per attempt; when the run's remaining budget
falls below a threshold every role except the Validator moves at least that many steps
down, before the cap is hit. A model whose circuit breaker is open is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runledger.cost.pricing import PricingTable
from runledger.validation import ConfigError, load_config

__all__ = ["NEVER_DOWNGRADE", "Route", "RoutingError", "RoutingTable"]

NEVER_DOWNGRADE = frozenset({"validator"})
"""Roles that always get their first model: a cheaper Validator would pass bad work."""


class RoutingError(ConfigError):
    """The routing file is invalid; the message names the offending key."""


class _Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    below: float = Field(gt=0, le=1)
    step: int = Field(ge=1)


class _RoutingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: dict[str, list[str]] = Field(min_length=1)
    default: list[str] | None = None
    downgrade_on_retry: bool = True
    budget_thresholds: list[_Threshold] = Field(default_factory=list)

    @field_validator("roles")
    @classmethod
    def _lower_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k.lower(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _check(self) -> _RoutingFile:
        for role, chain in self.roles.items():
            if not chain:
                raise ValueError(f"roles.{role}: list at least one model")
            if len(set(chain)) != len(chain):
                raise ValueError(f"roles.{role}: a model is listed twice")
            if role in NEVER_DOWNGRADE and len(chain) > 1:
                raise ValueError(
                    f"roles.{role}: the {role.capitalize()} never downgrades; list exactly one "
                    f"model (got {len(chain)})"
                )
        if self.default is not None and not self.default:
            raise ValueError("default: list at least one model")
        belows = [t.below for t in self.budget_thresholds]
        if belows != sorted(belows, reverse=True) or len(set(belows)) != len(belows):
            raise ValueError("budget_thresholds: list thresholds from the highest 'below' down")
        steps = [t.step for t in self.budget_thresholds]
        if steps != sorted(steps):
            raise ValueError("budget_thresholds: a lower 'below' must not have a smaller step")
        return self


@dataclass(frozen=True)
class Route:
    """The model chosen for a call and why."""

    role: str
    model: str
    step: int
    reason: str


class RoutingTable:
    """Choose the model for a role's call given the attempt and the remaining budget."""

    def __init__(self, parsed: _RoutingFile, *, source: str = "<memory>") -> None:
        self._parsed = parsed
        self.source = source

    @classmethod
    def load(cls, path: str | Path, *, pricing: PricingTable | None = None) -> RoutingTable:
        """Load a routing YAML file; with ``pricing``, check every model is priced."""
        parsed = load_config(_RoutingFile, path, what="routing", error=RoutingError)
        return cls._from(parsed, pricing, str(path))

    @classmethod
    def from_mapping(
        cls, data: Any, *, pricing: PricingTable | None = None, source: str = "<memory>"
    ) -> RoutingTable:
        """Validate an already parsed routing document."""
        parsed = load_config(_RoutingFile, data, what="routing", error=RoutingError)
        return cls._from(parsed, pricing, source)

    @classmethod
    def _from(cls, parsed: _RoutingFile, pricing: PricingTable | None, source: str) -> RoutingTable:
        if pricing is not None:
            chains = [(f"roles.{r}", c) for r, c in parsed.roles.items()]
            if parsed.default:
                chains.append(("default", parsed.default))
            for key, chain in chains:
                for i, model in enumerate(chain):
                    if model not in pricing:
                        raise RoutingError(
                            f"routing file {source}: {key}[{i}]: unknown model {model!r} "
                            "(not in the pricing table)"
                        )
                    if i and _blended(pricing, model) > _blended(pricing, chain[i - 1]):
                        raise RoutingError(
                            f"routing file {source}: {key}[{i}]: {model!r} is not cheaper than "
                            f"{chain[i - 1]!r}; a chain must go from dearer to cheaper models"
                        )
        return cls(parsed, source=source)

    def chain(self, role: str) -> list[str]:
        """Return the role's models, preferred first."""
        role = role.lower()
        chain = self._parsed.roles.get(role) or self._parsed.default
        if not chain:
            raise RoutingError(f"no route for role {role!r}: add it under 'roles' or set 'default'")
        return list(chain)

    def route(
        self,
        role: str,
        *,
        attempt: int = 1,
        remaining_fraction: float | None = None,
        is_open: Callable[[str], bool] | None = None,
    ) -> Route:
        """Pick the model for ``role``'s call.

        Args:
            role: the agent role.
            attempt: 1 for the first try, 2 for the first retry, ...
            remaining_fraction: share of the run's budget left (None: no budget).
            is_open: tells whether a model's circuit breaker is open (skip it).
        """
        role = role.lower()
        chain = self.chain(role)
        if role in NEVER_DOWNGRADE:
            return Route(role, chain[0], 0, "the Validator never downgrades")
        step, reason = 0, "preferred model"
        if self._parsed.downgrade_on_retry and attempt > 1:
            step, reason = attempt - 1, f"retry {attempt - 1}"
        if remaining_fraction is not None:
            for t in self._parsed.budget_thresholds:
                if remaining_fraction < t.below and t.step > step:
                    step = t.step
                    reason = f"budget below {t.below:.0%} of the run's cap"
        step = min(step, len(chain) - 1)
        if is_open is not None:
            for candidate in range(step, len(chain)):
                if not is_open(chain[candidate]):
                    if candidate != step:
                        reason = f"{reason}; circuit open for {', '.join(chain[step:candidate])}"
                    return Route(role, chain[candidate], candidate, reason)
            # Every cheaper model is failing too: use the cheapest and let the breaker refuse.
            return Route(role, chain[-1], len(chain) - 1, f"{reason}; every circuit open")
        return Route(role, chain[step], step, reason)

    def roles(self) -> Iterable[str]:
        """Return the roles with their own chain."""
        return list(self._parsed.roles)


def _blended(pricing: PricingTable, model: str) -> Any:
    p = pricing.price(model)
    return p.input_per_1m + p.output_per_1m
