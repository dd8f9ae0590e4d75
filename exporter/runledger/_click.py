"""Click parameter callbacks shared by the command-line groups."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import click

__all__ = ["usd"]


def usd(_ctx: Any, _param: Any, value: str | None) -> Decimal | None:
    """Parse a dollar amount: a finite number, zero or more."""
    if value is None:
        return None
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a number of dollars") from None
    if not result.is_finite() or result < 0:
        raise click.BadParameter("must be zero or more dollars")
    return result
