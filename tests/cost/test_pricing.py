"""The pricing table: prices per 1M tokens, tenant overrides, validation, unknown models."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from runledger.cost.pricing import PricingError, PricingTable, UnknownModelError, default_pricing


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pricing.yml"
    path.write_text(text)
    return path


def test_default_table_has_several_providers_and_prices_a_call() -> None:
    table = default_pricing()
    providers = {table.price(m).provider for m in table.models()}
    assert len(table.models()) >= 6
    assert {"openai", "anthropic", "google"} <= providers
    # gpt-4o: $2.50 in, $10 out, $1.25 cached in, per 1M tokens.
    cost = table.cost("gpt-4o", tokens_in=1000, tokens_out=500, cached_tokens_in=200)
    assert cost == Decimal("0.00725")  # 800*2.5 + 200*1.25 + 500*10 = 7250 per 1M


def test_alias_resolves_to_its_model() -> None:
    table = default_pricing()
    assert table.cost("gpt-4o-2024-08-06", tokens_in=10**6, tokens_out=0) == Decimal("2.5")


def test_unknown_model_is_an_error_never_zero() -> None:
    with pytest.raises(
        UnknownModelError, match=r"unknown model 'gpt-x'.*refusing to cost it as \$0"
    ):
        default_pricing().cost("gpt-x", tokens_in=1, tokens_out=1)


def test_tenant_override_changes_only_that_tenant(tmp_path: Path) -> None:
    table = PricingTable.load(write(tmp_path, """
models:
  m1: {provider: p, input_per_1m: 1.0, output_per_1m: 2.0}
tenants:
  acme:
    m1: {input_per_1m: 0.5}
"""))  # fmt: skip
    assert table.cost("m1", tokens_in=10**6, tokens_out=10**6, tenant_id="acme") == Decimal("2.5")
    assert table.cost("m1", tokens_in=10**6, tokens_out=10**6, tenant_id="other") == Decimal("3")
    assert table.cost("m1", tokens_in=10**6, tokens_out=0) == Decimal("1")


def test_cached_price_defaults_to_input_price(tmp_path: Path) -> None:
    table = PricingTable.load(write(tmp_path, """
models:
  m1: {provider: p, input_per_1m: 4, output_per_1m: 8}
"""))  # fmt: skip
    assert table.cost("m1", tokens_in=10**6, tokens_out=0, cached_tokens_in=10**6) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  gpt-x: {provider: p, input_per_1m: 1, output_per_1m: -1}\n",
         "models.gpt-x.output_per_1m: must be >= 0"),
        ("models:\n  gpt-x: {provider: p, input_per_1m: 1}\n",
         "models.gpt-x.output_per_1m: is required"),
        ("models:\n  gpt-x: {provider: p, input_per_1m: cheap, output_per_1m: 1}\n",
         "models.gpt-x.input_per_1m: must be a number"),
        ("models:\n  gpt-x: {provider: p, input_per_1m: 1, output_per_1m: 1, colour: red}\n",
         "models.gpt-x.colour: is not a known field"),
        ("models:\n  m: {provider: p, input_per_1m: 1, output_per_1m: 1}\n"
         "tenants:\n  acme:\n    gpt-y: {input_per_1m: 0}\n",
         "tenants.acme.gpt-y: unknown model"),
        ("models:\n  m: {provider: p, input_per_1m: 1, output_per_1m: 1}\n"
         "tenants:\n  acme:\n    m: {output_per_1m: -2}\n",
         "tenants.acme.m.output_per_1m: must be >= 0"),
        ("models: {}\n", "models: must not be empty"),
        ("- just a list\n", "the top level must be a mapping"),
        ("models: [unclosed\n", "is not valid YAML"),
    ],
)  # fmt: skip
def test_malformed_pricing_file_names_the_offending_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError) as err:
        PricingTable.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_cached_tokens_cannot_exceed_input_tokens() -> None:
    with pytest.raises(
        PricingError,
        match=r"cached_tokens_in \(5\) plus cache_write_tokens_in \(0\) cannot exceed"
        r" tokens_in \(2\)",
    ):
        default_pricing().cost("gpt-4o", tokens_in=2, tokens_out=0, cached_tokens_in=5)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read pricing file"):
        PricingTable.load(tmp_path / "nope.yml")


def test_cache_writes_long_context_and_batch_are_billed_as_the_providers_bill_them() -> None:
    table = default_pricing()
    # Anthropic: reads at 0.1x, writes at 1.25x the input price, the rest at the input price.
    assert table.cost(
        "claude-sonnet-4", tokens_in=1800, tokens_out=100,
        cached_tokens_in=1000, cache_write_tokens_in=300,
    ) == Decimal("0.004425")  # fmt: skip
    # A prompt above 200k tokens is billed at the long-context tier, the whole call.
    assert table.cost("gemini-2.5-pro", tokens_in=200_000, tokens_out=1000) == Decimal("0.26")
    assert table.cost("gemini-2.5-pro", tokens_in=200_001, tokens_out=1000) == Decimal("0.5150025")
    # Batch API: half price.
    full = table.cost("gpt-4.1", tokens_in=10_000, tokens_out=2000)
    assert table.cost("gpt-4.1", tokens_in=10_000, tokens_out=2000, batch=True) == full / 2
    with pytest.raises(PricingError, match="cache_write_tokens_in must be >= 0"):
        table.cost("gpt-4.1", tokens_in=1, tokens_out=0, cache_write_tokens_in=-1)


def test_long_context_tiers_must_ascend() -> None:
    doc = {"models": {"m": {"provider": "p", "input_per_1m": 1, "output_per_1m": 1,
                            "long_context": [
                                {"above_tokens": 200, "input_per_1m": 2, "output_per_1m": 2},
                                {"above_tokens": 100, "input_per_1m": 3, "output_per_1m": 3},
                            ]}}}  # fmt: skip
    with pytest.raises(PricingError, match="long_context: tiers must have distinct, ascending"):
        PricingTable.from_mapping(doc)
