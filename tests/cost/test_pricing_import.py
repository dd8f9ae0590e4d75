"""``runledger pricing import``: a LiteLLM price list as a reviewable diff of the table."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path

import yaml
from click.testing import CliRunner

from runledger.cli import main
from runledger.cost.pricing import PricingTable

TABLE = {
    "currency": "USD",
    "models": {
        "gpt-4.1": {"provider": "openai", "input_per_1m": 2.00, "output_per_1m": 8.00,
                    "cached_input_per_1m": 0.50},
        "gemini-2.5-pro": {"provider": "google", "input_per_1m": 1.25, "output_per_1m": 10},
        "house-model": {"provider": "acme", "input_per_1m": 1, "output_per_1m": 1},
    },
}  # fmt: skip
LIST = {
    "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
    "gpt-4.1": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2e-06,
                "output_cost_per_token": 8e-06, "cache_read_input_token_cost": 5e-07,
                "input_cost_per_token_batches": 1e-06},
    "gemini/gemini-2.5-pro": {
        "litellm_provider": "gemini", "mode": "chat", "input_cost_per_token": 1.25e-06,
        "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-07,
        "input_cost_per_token_above_200k_tokens": 2.5e-06,
        "output_cost_per_token_above_200k_tokens": 1.5e-05},
    "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding",
                               "input_cost_per_token": 2e-08, "output_cost_per_token": 0},
    "claude-haiku-4-5": {"litellm_provider": "anthropic", "mode": "chat",
                         "input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06,
                         "cache_creation_input_token_cost": 1.25e-06},
}  # fmt: skip


def _files(tmp_path: Path) -> tuple[Path, Path]:
    table, listed = tmp_path / "pricing.yml", tmp_path / "prices.json"
    table.write_text(yaml.safe_dump(TABLE))
    listed.write_text(json.dumps(LIST))
    return table, listed


def test_import_prints_a_diff_of_what_the_list_changes(tmp_path: Path) -> None:
    table, listed = _files(tmp_path)
    out = tmp_path / "new.yml"
    result = CliRunner().invoke(
        main,
        ["pricing", "import", str(listed), "--pricing", str(table), "--add", "claude-haiku-4-5",
         "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # changes shown
    added = [line for line in result.output.splitlines() if line.startswith("+ ")]
    removed = [line for line in result.output.splitlines() if line.startswith("- ")]
    assert "+    batch_discount: 0.5" in added  # gpt-4.1's batch price is half
    assert "+    cached_input_per_1m: 0.125" in added  # gemini's cache reads
    assert "+    - above_tokens: 200000" in added  # and its long-context tier
    assert "+  claude-haiku-4-5:" in added
    assert "+    cache_write_input_per_1m: 1.25" in added
    assert removed == []  # nothing of the table is dropped; 2.00 and 2 are the same price
    assert "house-model" not in "".join(added)
    assert result.output.splitlines()[-2] == (
        "2 model(s) with new prices, 1 added, 1 not in the list (house-model)"
    )
    new = PricingTable.load(out)
    assert new.cost("gemini-2.5-pro", tokens_in=300_000, tokens_out=0) == Decimal("0.75")
    assert new.price("house-model").input_per_1m == 1


def test_an_unchanged_table_shows_no_diff_and_exits_0(tmp_path: Path) -> None:
    table, listed = _files(tmp_path)
    listed.write_text(json.dumps({"gpt-4.1": LIST["gpt-4.1"]}))
    doc = dict(TABLE, models={"gpt-4.1": {**TABLE["models"]["gpt-4.1"], "batch_discount": 0.5}})
    table.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["pricing", "import", str(listed), "--pricing", str(table)])
    assert result.exit_code == 0, result.output
    assert result.output == "0 model(s) with new prices, 0 added, 0 not in the list\n"


def test_bad_input_exits_2_naming_the_problem(tmp_path: Path) -> None:
    table, listed = _files(tmp_path)
    result = CliRunner().invoke(
        main, ["pricing", "import", str(listed), "--pricing", str(table), "--add", "gpt-9"]
    )
    assert result.exit_code == 2
    assert "--add gpt-9: not a chat model with prices in" in result.output
    listed.write_text("[1, 2]")
    result = CliRunner().invoke(main, ["pricing", "import", str(listed), "--pricing", str(table)])
    assert result.exit_code == 2
    assert "not a LiteLLM price list" in result.output


def test_the_price_list_litellm_ships_reads_against_the_shipped_table() -> None:
    # The JSON inside the litellm package (found without importing litellm, which would
    # try the network for a newer list).
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    shipped = Path(spec.origin).with_name("model_prices_and_context_window_backup.json")
    result = CliRunner().invoke(main, ["pricing", "import", str(shipped)])
    assert result.exit_code in (0, 1), result.output
    summary = result.output.splitlines()[-1]
    assert "model(s) with new prices, 0 added" in summary
    # Most of the shipped table's models are found in LiteLLM's list.
    unmatched = summary.split("(")[-1] if "not in the list (" in summary else ""
    assert len([m for m in unmatched.split(",") if m.strip()]) <= 5, summary
