"""Click parameter callbacks shared by the command-line groups."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click

from runledger.money import parse_usd

__all__ = ["cli_actor", "usd"]


def cli_actor() -> str:
    """Name who ran an administrative command, for the audit log."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def usd(_ctx: Any, _param: Any, value: str | None) -> Decimal | None:
    """Parse a dollar amount the ledger can store (``runledger.money.parse_usd``)."""
    if value is None:
        return None
    try:
        return parse_usd(value, name="amount")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
