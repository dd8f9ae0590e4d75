"""The audit log: every admin action and every cap change, in the caller's transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import psycopg

__all__ = ["record_audit"]


def record_audit(
    conn: psycopg.Connection,
    *,
    actor: str,
    role: str,
    action: str,
    tenant_id: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one audit row; it commits or rolls back with the action it records."""
    conn.execute(
        "INSERT INTO audit_log (actor, actor_role, action, tenant_id, target, details)"
        " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
        (actor, role, action, tenant_id, target, orjson.dumps(details or {}).decode()),
    )
