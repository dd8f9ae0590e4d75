"""Read a maintained price list (LiteLLM's ``model_prices_and_context_window.json``) and show
what it would change in a runledger pricing table, as a reviewable unified diff.

Nothing is changed on its own: ``runledger pricing import FILE`` prints the diff, and
``--output PATH`` writes the updated table for review and commit.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from runledger.cost.pricing import PricingError, PricingTable

__all__ = ["ImportReport", "import_prices", "litellm_prices"]

_MILLION = Decimal(1_000_000)
_ABOVE = re.compile(r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
                    r"|cache_creation_input_token_cost)_above_(\d+)k_tokens$")  # fmt: skip
_FIELDS = {
    "input_cost_per_token": "input_per_1m",
    "output_cost_per_token": "output_per_1m",
    "cache_read_input_token_cost": "cached_input_per_1m",
    "cache_creation_input_token_cost": "cache_write_input_per_1m",
}
_PROVIDERS = {
    "openai": ("openai",),
    "anthropic": ("anthropic",),
    "google": ("gemini", "vertex_ai-language-models"),
    "mistral": ("mistral",),
    "deepseek": ("deepseek",),
}
"""runledger provider names and the ``litellm_provider`` values that list the same prices."""


def _per_1m(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        price = Decimal(str(value)) * _MILLION
    except ArithmeticError:
        return None
    return price.normalize() if price >= 0 else None


def _plain(value: Decimal) -> float | int:
    """A price as YAML shows it best (a number, not a Decimal object)."""
    return int(value) if value == value.to_integral_value() else float(value)


def litellm_prices(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return runledger price fields for every chat or completion model of a LiteLLM list."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in doc.items():
        if name == "sample_spec" or not isinstance(entry, Mapping):
            continue
        if entry.get("mode") not in (None, "chat", "completion", "responses"):
            continue
        fields: dict[str, Any] = {"litellm_provider": entry.get("litellm_provider")}
        for key, field in _FIELDS.items():
            price = _per_1m(entry.get(key))
            if price is not None:
                fields[field] = price
        if "input_per_1m" not in fields or "output_per_1m" not in fields:
            continue
        tiers: dict[int, dict[str, Decimal]] = {}
        for key, value in entry.items():
            found = _ABOVE.match(key)
            price = _per_1m(value) if found else None
            if found and price is not None:
                tiers.setdefault(int(found[2]) * 1000, {})[_FIELDS[found[1]]] = price
        long_context = [
            {"above_tokens": above, **prices}
            for above, prices in sorted(tiers.items())
            if "input_per_1m" in prices and "output_per_1m" in prices
        ]
        if long_context:
            fields["long_context"] = long_context
        batch_in = _per_1m(entry.get("input_cost_per_token_batches"))
        if batch_in is not None and fields["input_per_1m"] > 0:
            discount = 1 - batch_in / fields["input_per_1m"]
            if 0 < discount < 1:
                fields["batch_discount"] = discount.normalize()
        out[name] = fields
    return out


def _find(
    imported: Mapping[str, dict[str, Any]], names: Iterable[str], provider: str
) -> dict[str, Any] | None:
    """Return the imported prices of the first of ``names`` listed for ``provider``."""
    sources = _PROVIDERS.get(provider, (provider,))
    for name in names:
        for key in (name, *(f"{source}/{name}" for source in sources)):
            entry = imported.get(key)
            if entry is not None and (entry.get("litellm_provider") in sources):
                return entry
    return None


class ImportReport:
    """The table in use, the table after the import, and what changed."""

    def __init__(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.before = before
        self.after = after
        self.updated: list[str] = []
        self.unmatched: list[str] = []
        self.added: list[str] = []

    def diff(self, before_name: str, after_name: str) -> str:
        """Return the unified diff of the two tables as YAML."""
        lines = difflib.unified_diff(
            _yaml(self.before).splitlines(keepends=True),
            _yaml(self.after).splitlines(keepends=True),
            fromfile=before_name,
            tofile=after_name,
        )
        return "".join(lines)


def _yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=100)


_PRICE_FIELDS = (
    "input_per_1m", "output_per_1m", "cached_input_per_1m", "cache_write_input_per_1m",
    "long_context", "batch_discount",
)  # fmt: skip


def _plain_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _PRICE_FIELDS:
        value = fields.get(key)
        if value is None:
            continue
        if key == "long_context":
            out[key] = [
                {"above_tokens": t["above_tokens"]}
                | {k: _plain(t[k]) for k in _PRICE_FIELDS[:4] if t.get(k) is not None}
                for t in value
            ]
        else:
            out[key] = _plain(value)
    return out


def _model(provider: str, fields: Mapping[str, Any], aliases: Any) -> dict[str, Any]:
    model = {"provider": provider, **_plain_fields(fields)}
    if aliases:
        model["aliases"] = list(aliases)
    return model


def _decimals(price: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _PRICE_FIELDS:
        value = price.get(key)
        if value is None:
            continue
        if key == "long_context":
            out[key] = [{k: v if k == "above_tokens" else Decimal(str(v)) for k, v in t.items()}
                        for t in value]  # fmt: skip
        else:
            out[key] = Decimal(str(value))
    return out


def import_prices(
    table_path: str | Path, price_list: str | Path, *, add: Iterable[str] = ()
) -> ImportReport:
    """Compare the pricing YAML at ``table_path`` with a LiteLLM price list.

    Prices of models the table already has are taken from the list (name, aliases, or the
    ``<provider>/<name>`` key); models of ``add`` are added from it. Tenant overrides and
    aliases stay as they are. The result is validated as a pricing table.

    Raises:
        PricingError: a file cannot be read, or a model of ``add`` is not in the list.
    """
    try:
        before = yaml.safe_load(Path(table_path).read_text())
        listed = json.loads(Path(price_list).read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise PricingError(f"cannot read the pricing files: {exc}") from exc
    if not isinstance(listed, dict):
        raise PricingError(f"{price_list}: not a LiteLLM price list (a JSON object of models)")
    PricingTable.from_mapping(before, source=str(table_path))
    imported = litellm_prices(listed)
    for name, price in before["models"].items():
        # One form for both tables (2.00 and 2 are one price, keys in one order), so the
        # diff shows only what the list changes.
        before["models"][name] = _model(price["provider"], _decimals(price), price.get("aliases"))
    after = json.loads(json.dumps(before))  # a deep copy of plain data
    report = ImportReport(before, after)
    for name, price in after["models"].items():
        found = _find(imported, (name, *price.get("aliases", ())), price["provider"])
        if found is None:
            report.unmatched.append(name)
            continue
        new = _model(price["provider"], found, price.get("aliases"))
        if {k: price.get(k) for k in _PRICE_FIELDS} != {k: new.get(k) for k in _PRICE_FIELDS}:
            report.updated.append(name)
        after["models"][name] = new
    for name in add:
        entry = imported.get(name)
        if entry is None:
            raise PricingError(f"--add {name}: not a chat model with prices in {price_list}")
        provider = next(
            (ours for ours, theirs in _PROVIDERS.items() if entry["litellm_provider"] in theirs),
            str(entry["litellm_provider"]),
        )
        after["models"][name.split("/")[-1]] = _model(provider, entry, None)
        report.added.append(name)
    PricingTable.from_mapping(after, source=f"{table_path} + {price_list}")
    return report
