"""Per-model token prices, with per-tenant overrides, loaded from a validated YAML file.

Prices are US dollars per one million tokens. ``tokens_in`` counts every input token,
including the ones served from the provider's prompt cache and the ones written to it;
``cached_tokens_in`` (cache reads) and ``cache_write_tokens_in`` (cache writes) are those
parts of it, billed at the model's cached-input and cache-write prices. A model may have
long-context tiers (a prompt above ``above_tokens`` is billed at the tier's prices, the whole
call) and a batch discount (the fraction taken off a call made through the batch API).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runledger.money import Usd, round_usd
from runledger.validation import ConfigError, load_config

__all__ = [
    "LongContextTier",
    "ModelPrice",
    "PricingError",
    "PricingTable",
    "UnknownModelError",
    "default_pricing",
]

_MILLION = Decimal(1_000_000)


class PricingError(ConfigError):
    """The pricing file is invalid, or a cost cannot be computed from it."""


class UnknownModelError(PricingError):
    """A model has no price: never cost it as $0."""

    def __init__(self, model: str, tenant_id: str | None = None) -> None:
        self.model = model
        self.tenant_id = tenant_id
        super().__init__(
            f"unknown model {model!r}: it has no price in the pricing table; add it under "
            f"'models' in the pricing file (refusing to cost it as $0)"
        )


class _Rates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: Usd
    output_per_1m: Usd
    cached_input_per_1m: Usd | None = None
    cache_write_input_per_1m: Usd | None = None

    @property
    def cached_price(self) -> Decimal:
        """Return the cached-input price, the input price when the model has no cache."""
        return self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m

    @property
    def cache_write_price(self) -> Decimal:
        """Return the cache-write price, the input price when the model names none."""
        if self.cache_write_input_per_1m is None:
            return self.input_per_1m
        return self.cache_write_input_per_1m


class LongContextTier(_Rates):
    """Prices for a call whose prompt (``tokens_in``) is above ``above_tokens``."""

    above_tokens: int = Field(gt=0)


class ModelPrice(_Rates):
    """Prices of one model in USD per one million tokens."""

    provider: str = Field(min_length=1)
    long_context: tuple[LongContextTier, ...] = ()
    batch_discount: Decimal = Field(Decimal(0), ge=0, lt=1)
    aliases: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _tiers_ascending(self) -> ModelPrice:
        bounds = [t.above_tokens for t in self.long_context]
        if bounds != sorted(set(bounds)):
            raise ValueError("long_context: tiers must have distinct, ascending above_tokens")
        return self

    def rates(self, tokens_in: int) -> _Rates:
        """Return the prices for a prompt of ``tokens_in`` tokens (its long-context tier)."""
        rates: _Rates = self
        for tier in self.long_context:
            if tokens_in > tier.above_tokens:
                rates = tier
        return rates


class _Override(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: Usd | None = None
    output_per_1m: Usd | None = None
    cached_input_per_1m: Usd | None = None
    cache_write_input_per_1m: Usd | None = None
    batch_discount: Decimal | None = Field(None, ge=0, lt=1)


class _PricingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = "USD"
    as_of: str | None = None
    models: dict[str, ModelPrice] = Field(min_length=1)
    tenants: dict[str, dict[str, _Override]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_names(self) -> _PricingFile:
        if self.currency != "USD":
            raise ValueError(f"currency: must be USD, got {self.currency!r}")
        seen: dict[str, str] = {}
        for name, price in self.models.items():
            for alias in (name, *price.aliases):
                if alias in seen and seen[alias] != name:
                    raise ValueError(
                        f"models.{name}.aliases: {alias!r} is already used by {seen[alias]!r}"
                    )
                seen[alias] = name
        for tenant, overrides in self.tenants.items():
            for model in overrides:
                if model not in seen:
                    raise ValueError(
                        f"tenants.{tenant}.{model}: unknown model (not listed under 'models')"
                    )
        return self


class PricingTable:
    """Look up model prices and compute the cost of a model call."""

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        tenant_overrides: Mapping[str, Mapping[str, ModelPrice]] | None = None,
        *,
        source: str = "<memory>",
        as_of: str | None = None,
    ) -> None:
        self._models = dict(models)
        self._aliases = {
            alias: name for name, price in self._models.items() for alias in price.aliases
        }
        self._overrides = {t: dict(m) for t, m in (tenant_overrides or {}).items()}
        self.source = source
        self.as_of = as_of

    @classmethod
    def load(cls, path: str | Path) -> PricingTable:
        """Load and validate a pricing YAML file; raise PricingError naming the bad key."""
        return cls._from(
            load_config(_PricingFile, path, what="pricing", error=PricingError), str(path)
        )

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<memory>") -> PricingTable:
        """Validate an already parsed pricing document."""
        return cls._from(
            load_config(_PricingFile, data, what="pricing", error=PricingError), source
        )

    @classmethod
    def _from(cls, parsed: _PricingFile, source: str) -> PricingTable:
        overrides: dict[str, dict[str, ModelPrice]] = {}
        for tenant, per_model in parsed.tenants.items():
            for model, override in per_model.items():
                canonical = model if model in parsed.models else _alias_of(parsed.models, model)
                base = parsed.models[canonical]
                changes = override.model_dump(exclude_none=True)
                overrides.setdefault(tenant, {})[canonical] = base.model_copy(update=changes)
        return cls(parsed.models, overrides, source=source, as_of=parsed.as_of)

    def models(self) -> list[str]:
        """Return the priced model names, sorted."""
        return sorted(self._models)

    def canonical(self, model: str) -> str:
        """Return the table's name for ``model`` (resolving aliases), or raise UnknownModelError."""
        if model in self._models:
            return model
        if model in self._aliases:
            return self._aliases[model]
        raise UnknownModelError(model)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and (model in self._models or model in self._aliases)

    def price(self, model: str, *, tenant_id: str | None = None) -> ModelPrice:
        """Return the prices that apply to ``model`` for ``tenant_id``."""
        name = self.canonical(model)
        if tenant_id is not None:
            override = self._overrides.get(tenant_id, {}).get(name)
            if override is not None:
                return override
        return self._models[name]

    def cost(
        self,
        model: str,
        *,
        tokens_in: int,
        tokens_out: int,
        cached_tokens_in: int = 0,
        cache_write_tokens_in: int = 0,
        batch: bool = False,
        tenant_id: str | None = None,
    ) -> Decimal:
        """Return the USD cost of one call, rounded up to 1e-9.

        Args:
            model: model name or alias from the pricing table.
            tokens_in: all input tokens, cache reads and writes included.
            tokens_out: output tokens.
            cached_tokens_in: the part of ``tokens_in`` served from the prompt cache.
            cache_write_tokens_in: the part of ``tokens_in`` written to the prompt cache.
            batch: the call went through the provider's batch API (its discount applies).
            tenant_id: apply this tenant's overrides, if any.
        """
        for label, value in (
            ("tokens_in", tokens_in),
            ("tokens_out", tokens_out),
            ("cached_tokens_in", cached_tokens_in),
            ("cache_write_tokens_in", cache_write_tokens_in),
        ):
            if value < 0:
                raise PricingError(f"{label} must be >= 0, got {value}")
        if cached_tokens_in + cache_write_tokens_in > tokens_in:
            raise PricingError(
                f"cached_tokens_in ({cached_tokens_in}) plus cache_write_tokens_in "
                f"({cache_write_tokens_in}) cannot exceed tokens_in ({tokens_in}): "
                "tokens_in counts cache reads and writes too"
            )
        p = self.price(model, tenant_id=tenant_id)
        r = p.rates(tokens_in)
        micro = (
            (tokens_in - cached_tokens_in - cache_write_tokens_in) * r.input_per_1m
            + cached_tokens_in * r.cached_price
            + cache_write_tokens_in * r.cache_write_price
            + tokens_out * r.output_per_1m
        )
        if batch:
            micro *= 1 - p.batch_discount
        return round_usd(micro / _MILLION)


def _alias_of(models: Mapping[str, ModelPrice], alias: str) -> str:
    for name, price in models.items():
        if alias in price.aliases:
            return name
    raise KeyError(alias)


def default_pricing() -> PricingTable:
    """Load the pricing table shipped with runledger."""
    ref = resources.files("runledger.cost").joinpath("pricing.yml")
    with resources.as_file(ref) as path:
        table = PricingTable.load(path)
    table.source = "runledger/cost/pricing.yml"
    return table
