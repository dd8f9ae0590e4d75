"""Console login sessions and signing keys, in PostgreSQL.

A session is opened by logging in with an API token; it acts as that token, so revoking the
token ends every session opened with it. Only SHA-256 digests of session ids are stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from runledger.store._database import Database
from runledger.store.audit import record_audit
from runledger.store.tokens import Principal, _digest

__all__ = ["Session", "SessionStore", "signing_key"]

SESSION_HOURS = 12


@dataclass(frozen=True)
class Session:
    """A live console session: who it acts as, its CSRF token, any impersonation."""

    principal: Principal
    csrf_token: str
    expires_at: datetime
    impersonating: str | None
    impersonation_reason: str | None
    session_digest: bytes


def _sha(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def signing_key(db: Database, name: str = "console") -> bytes:
    """Return the shared signing key ``name``, creating a random one on first use."""
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO console_keys (name, secret) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (name, secrets.token_bytes(32)),
        )
        row = conn.execute("SELECT secret FROM console_keys WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return bytes(row[0])


class SessionStore:
    """Open, look up, impersonate in, and end console sessions."""

    def __init__(self, db: Database, *, hours: float = SESSION_HOURS) -> None:
        self.db = db
        self.hours = hours

    def open(self, token: str) -> tuple[str, Principal] | None:
        """Open a session for an unrevoked token; return (session id, principal) or None."""
        session_id = secrets.token_urlsafe(32)
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT label, role, tenant_id FROM api_tokens"
                " WHERE token_sha256 = %s AND revoked_at IS NULL",
                (_digest(token),),
            ).fetchone()
            if row is None:
                return None
            principal = Principal(row[0], row[1], row[2])
            # Sessions ended or expired a week ago go as new ones open: the table stays small.
            conn.execute(
                "DELETE FROM console_sessions WHERE COALESCE(ended_at, expires_at)"
                " < now() - interval '7 days'"
            )
            conn.execute(
                "INSERT INTO console_sessions (session_sha256, token_sha256, csrf_token,"
                " expires_at) VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (_sha(session_id), _digest(token), secrets.token_urlsafe(32), self.hours * 3600),
            )
            record_audit(
                conn, actor=principal.label, role=principal.role, action="console_login",
                tenant_id=principal.tenant_id, target="console_session",
            )  # fmt: skip
        return session_id, principal

    def get(self, session_id: str) -> Session | None:
        """Return the live session of ``session_id`` (None when unknown, ended or expired,
        or when its token was revoked)."""
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT t.label, t.role, t.tenant_id, s.csrf_token, s.expires_at,"
                " s.impersonating, s.impersonation_reason FROM console_sessions s"
                " JOIN api_tokens t ON t.token_sha256 = s.token_sha256"
                " WHERE s.session_sha256 = %s AND s.ended_at IS NULL AND s.expires_at > now()"
                " AND t.revoked_at IS NULL",
                (_sha(session_id),),
            ).fetchone()
        if row is None:
            return None
        return Session(
            Principal(row[0], row[1], row[2]), row[3], row[4], row[5], row[6], _sha(session_id)
        )

    def end(self, session_id: str) -> Session | None:
        """End a session (logout); return what it was, for ending an impersonation."""
        session = self.get(session_id)
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE console_sessions SET ended_at = now() WHERE session_sha256 = %s",
                (_sha(session_id),),
            )
        return session

    def impersonate(self, session: Session, tenant_id: str | None, reason: str | None) -> None:
        """Start (tenant) or end (None) impersonating the owner of a tenant; audited."""
        with self.db.connection() as conn:
            if tenant_id is not None:
                found = conn.execute(
                    "SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)
                ).fetchone()
                if not found:
                    raise LookupError(f"unknown tenant {tenant_id!r}")
            conn.execute(
                "UPDATE console_sessions SET impersonating = %s, impersonation_reason = %s,"
                " impersonation_started_at = CASE WHEN %s::text IS NULL THEN NULL ELSE now() END"
                " WHERE session_sha256 = %s",
                (tenant_id, reason, tenant_id, session.session_digest),
            )
            record_audit(
                conn, actor=session.principal.label, role=session.principal.role,
                action="impersonation_started" if tenant_id else "impersonation_ended",
                tenant_id=tenant_id or session.impersonating, target="console_session",
                details={"reason": reason or session.impersonation_reason},
            )  # fmt: skip
