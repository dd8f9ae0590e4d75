"""Tenants: the unit of isolation, with a daily $ cap."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

import psycopg

from runledger.events import IDENT_PATTERN
from runledger.money import parse_usd

__all__ = ["create_tenant", "known_tenants"]

_ID_RE = re.compile(IDENT_PATTERN)


def create_tenant(
    conn: psycopg.Connection, tenant_id: str, *, daily_cap_usd: Decimal, display_name: str = ""
) -> bool:
    """Create a tenant; return False when it already exists (nothing is changed then)."""
    if not _ID_RE.match(tenant_id):
        raise ValueError(
            f"tenant id {tenant_id!r} must be 1-128 letters, digits or . _ : - "
            "starting with a letter or digit"
        )
    daily_cap_usd = parse_usd(daily_cap_usd, name="daily cap")
    cur = conn.execute(
        "INSERT INTO tenants (tenant_id, display_name, daily_cap_usd) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id) DO NOTHING",
        (tenant_id, display_name or tenant_id, daily_cap_usd),
    )
    return cur.rowcount == 1


def known_tenants(conn: psycopg.Connection, tenant_ids: Iterable[str]) -> set[str]:
    """Return those of ``tenant_ids`` that exist."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT tenant_id FROM tenants WHERE tenant_id = ANY(%s)", (sorted(set(tenant_ids)),)
        ).fetchall()
    }
