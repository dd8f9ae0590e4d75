"""Bearer tokens: create, look up, revoke. Only a SHA-256 of each secret is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import psycopg

__all__ = ["ROLES", "Principal", "create_token", "lookup_token", "revoke_token"]

Role = Literal["admin", "agent", "owner", "support", "finance"]
ROLES: tuple[Role, ...] = ("admin", "agent", "owner", "support", "finance")
TENANT_ROLES = frozenset({"agent", "owner"})
TOKEN_PREFIX = "rl_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a role, and the tenant for tenant-bound roles."""

    label: str
    role: Role
    tenant_id: str | None

    def can_write_tenant(self, tenant_id: str) -> bool:
        """Return True when this principal may write events of ``tenant_id``."""
        if self.role == "admin":
            return True
        return self.role == "agent" and self.tenant_id == tenant_id


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_token(conn: psycopg.Connection, *, role: str, label: str, tenant_id: str | None) -> str:
    """Create a token and return its secret (shown once; only its hash is kept)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role in TENANT_ROLES and not tenant_id:
        raise ValueError(f"{role} tokens belong to a tenant: name one (--tenant)")
    if role not in TENANT_ROLES and tenant_id:
        raise ValueError(f"{role} tokens are not bound to a tenant: drop --tenant")
    if tenant_id is not None:
        found = conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone()
        if not found:
            raise ValueError(f"unknown tenant {tenant_id!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_tokens (token_sha256, label, role, tenant_id) VALUES (%s, %s, %s, %s)",
        (_digest(token), label, role, tenant_id),
    )
    return token


def lookup_token(conn: psycopg.Connection, token: str) -> Principal | None:
    """Return the principal of an unrevoked token, or None."""
    row = conn.execute(
        "SELECT label, role, tenant_id FROM api_tokens"
        " WHERE token_sha256 = %s AND revoked_at IS NULL",
        (_digest(token),),
    ).fetchone()
    return Principal(row[0], row[1], row[2]) if row else None


def revoke_token(conn: psycopg.Connection, token: str) -> bool:
    """Revoke a token; return False when it was unknown or already revoked."""
    cur = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_sha256 = %s AND revoked_at IS NULL",
        (_digest(token),),
    )
    return cur.rowcount == 1
