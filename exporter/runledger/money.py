"""Dollar amounts: one type, one parser, one rounding rule.

The ledger stores dollars as ``numeric(20, 9)``: at most 11 digits before the point and 9
after. Every amount that enters runledger (an event's ``cost_usd``, a cap, a lease request,
an environment variable, a command-line option) is checked against that shape here, so
nothing is accepted that PostgreSQL would refuse or round.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

__all__ = ["CENT", "MAX_USD", "NANO", "Usd", "parse_usd", "round_usd", "usd"]

NANO = Decimal("0.000000001")
"""Ledger precision: a billionth of a dollar."""

CENT = Decimal("0.01")

MAX_USD = Decimal("99999999999.999999999")
"""The largest amount a ``numeric(20, 9)`` column holds."""

Usd = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=9)]
"""A dollar amount as the ledger stores it: finite, zero or more, at most 1e-9 precise.

The digit limits already bound it by ``MAX_USD``: no ``le`` check, which would cost every
ingested event a Python comparison.
"""

_ADAPTER: TypeAdapter[Decimal] = TypeAdapter(Usd)


def parse_usd(value: object, *, name: str = "amount") -> Decimal:
    """Return ``value`` (a number or numeric string) as a ledger dollar amount.

    Raises:
        ValueError: naming ``name`` and what is wrong (not a number, negative, too large,
            more than nine decimal places).
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of dollars, not {value!r}")
    if isinstance(value, str):
        value = value.strip()
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        kind = err["type"]
        if kind in ("decimal_parsing", "decimal_type", "finite_number"):
            problem = f"must be a number of dollars, not {value!r}"
        elif kind == "greater_than_equal":
            problem = "must be zero or more dollars"
        elif kind in ("less_than_equal", "decimal_max_digits", "decimal_whole_digits"):
            problem = "must be less than 100 billion dollars"
        elif kind == "decimal_max_places":
            problem = "must have at most 9 decimal places"
        else:
            problem = err["msg"]
        raise ValueError(f"{name} {problem}") from None


def round_usd(value: Decimal | int | str | float) -> Decimal:
    """Return ``value`` at ledger precision, rounded up (a charge is never rounded away)."""
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    return amount.quantize(NANO, rounding=ROUND_CEILING)


def usd(value: Decimal | float | int | str, *, name: str = "amount") -> Decimal:
    """Return a caller's dollar amount at ledger precision (rounded up); ValueError naming
    ``name`` if it is not one (computed floats such as ``0.1 + 0.2`` are accepted)."""
    try:
        value = round_usd(value)
    except ArithmeticError:
        pass  # not a finite number: parse_usd says so, naming the field
    return parse_usd(value, name=name)
