"""JSON-ready forms of the rows the store returns."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

__all__ = ["json_ready"]


def json_ready(fields: dict[str, Any]) -> dict[str, Any]:
    """Turn the decimals of a flat mapping into strings and its dates and times into ISO 8601."""
    return {
        key: str(value) if isinstance(value, Decimal)
        else value.isoformat() if isinstance(value, date)
        else value
        for key, value in fields.items()
    }  # fmt: skip
