"""The console's quick actions, each audited with who, what, why and before/after.

Pause and resume a tenant, reopen a project's phase, ask a Coordinator to rerun a run's step
(and let it claim the request), and switch whether owners see raw token counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runledger.store._database import Database
from runledger.store._json import json_ready
from runledger.store.audit import record_audit

__all__ = ["Actor", "ConsoleActions", "NotFound", "Refused"]


class NotFound(LookupError):
    """The tenant, project or run does not exist."""


class Refused(ValueError):
    """The action cannot be done in the current state (the message says why)."""


@dataclass(frozen=True)
class Actor:
    """Who acts: the token's label and role (audited as is)."""

    label: str
    role: str


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise Refused("a reason is required: say why")
    return reason


class ConsoleActions:
    """Quick actions on the ledger; every one writes its audit row in its transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- tenants --------------------------------------------------------------------------

    def set_paused(
        self, tenant_id: str, *, paused: bool, reason: str, actor: Actor
    ) -> dict[str, Any]:
        """Pause (no new runs or spend) or resume a tenant; return before/after."""
        reason = _reason(reason)
        with self.db.connection() as conn:
            before = _tenant_state(conn, tenant_id)
            status = "paused" if paused else "active"
            if before["status"] == status:
                raise Refused(f"tenant {tenant_id!r} is already {status}")
            conn.execute(
                "UPDATE tenants SET status = %s, paused_reason = %s WHERE tenant_id = %s",
                (status, reason if paused else None, tenant_id),
            )
            return _tenant_changed(
                conn, tenant_id, before, actor=actor, reason=reason, target="tenant_status",
                action="tenant_paused" if paused else "tenant_resumed",
            )  # fmt: skip

    def set_owner_sees_tokens(
        self, tenant_id: str, *, allowed: bool, reason: str, actor: Actor
    ) -> dict[str, Any]:
        """Switch whether the tenant's owners see raw token counts; audited."""
        reason = _reason(reason)
        with self.db.connection() as conn:
            before = _tenant_state(conn, tenant_id)
            conn.execute(
                "UPDATE tenants SET owner_sees_tokens = %s WHERE tenant_id = %s",
                (allowed, tenant_id),
            )
            return _tenant_changed(
                conn, tenant_id, before, actor=actor, reason=reason, target="owner_sees_tokens",
                action="owner_token_visibility",
            )  # fmt: skip

    # -- projects -------------------------------------------------------------------------

    def reopen_phase(
        self, project_id: str, *, phase: str, reason: str, actor: Actor, tenant_id: str | None
    ) -> dict[str, Any]:
        """Put a project back into ``phase`` (one it has been in); return before/after."""
        reason = _reason(reason)
        with self.db.connection() as conn:
            before = _project_state(conn, project_id, tenant_id)
            seen = conn.execute(
                "SELECT 1 FROM events WHERE project_id = %s AND (phase = %s OR"
                " (type = 'phase_advanced' AND payload->>'to_phase' = %s)) LIMIT 1",
                (project_id, phase, phase),
            ).fetchone()
            if not seen:
                raise Refused(
                    f"project {project_id!r} has never been in phase {phase!r}: reopen one of"
                    " the phases on its timeline"
                )
            conn.execute(
                "UPDATE projects SET current_phase = %s, phase_entered_at = now()"
                " WHERE project_id = %s",
                (phase, project_id),
            )
            after = _project_state(conn, project_id, tenant_id)
            _audit_change(
                conn, actor, action="phase_reopened", tenant_id=before["tenant_id"],
                target=f"project:{project_id}", reason=reason, before=before, after=after,
            )  # fmt: skip
        return {"project_id": project_id, "before": before, "after": after}

    # -- reruns ---------------------------------------------------------------------------

    def request_rerun(
        self, run_id: str, *, reason: str, actor: Actor, tenant_id: str | None
    ) -> dict[str, Any]:
        """Ask the tenant's Coordinator to run the step of ``run_id`` again.

        Asking while a request for the run is still pending answers that request
        (``created`` False) instead of queueing a second one.
        """
        reason = _reason(reason)
        with self.db.connection() as conn:
            run = _one(
                conn,
                "SELECT run_id, tenant_id, project_id, phase, role, playbook, attempt, status"
                " FROM runs WHERE run_id = %s AND (%s::text IS NULL OR tenant_id = %s)",
                (run_id, tenant_id, tenant_id),
            )
            if run is None:
                raise NotFound(f"unknown run {run_id!r}")
            if run["status"] in ("queued", "running"):
                raise Refused(
                    f"run {run_id!r} is still {run['status']}: rerun it once it has ended"
                )
            row = _one(
                conn,
                "INSERT INTO rerun_requests (run_id, tenant_id, project_id, phase, role, playbook,"
                " attempt, reason, requested_by) VALUES (%(run_id)s, %(tenant_id)s,"
                " %(project_id)s, %(phase)s, %(role)s, %(playbook)s, %(attempt)s, %(reason)s,"
                " %(by)s) ON CONFLICT (run_id) WHERE status = 'pending' DO NOTHING"
                f" RETURNING {_RERUN_COLS}",
                {**run, "reason": reason, "by": actor.label},
            )
            created = row is not None
            if row is None:
                row = _one(
                    conn,
                    f"SELECT {_RERUN_COLS} FROM rerun_requests WHERE run_id = %s"
                    " AND status = 'pending'",
                    (run_id,),
                )
                assert row is not None
            else:
                record_audit(
                    conn, actor=actor.label, role=actor.role, action="rerun_requested",
                    tenant_id=run["tenant_id"], target=f"run:{run_id}",
                    details={"reason": reason, "request_id": row["request_id"],
                             "before": {"run_status": run["status"], "attempt": run["attempt"]},
                             "after": {"request": "pending"}},
                )  # fmt: skip
        return {**json_ready(row), "created": created}

    def claim_rerun(self, tenant_id: str, *, holder: str, actor: Actor) -> dict[str, Any] | None:
        """Claim the oldest pending rerun of a tenant for ``holder``; None when none waits.

        The claim assigns the new run's id (``<run_id>-rerun-<request_id>``) and attempt,
        so two Coordinators can never both start it.
        """
        with self.db.connection() as conn:
            row = _one(
                conn,
                "UPDATE rerun_requests SET status = 'claimed', claimed_by = %(holder)s,"
                " claimed_at = now(), new_run_id = left(run_id, 100) || '-rerun-' || request_id"
                " WHERE request_id = (SELECT request_id FROM rerun_requests"
                "   WHERE tenant_id = %(t)s AND status = 'pending'"
                "   ORDER BY requested_at, request_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_RERUN_COLS}",
                {"t": tenant_id, "holder": holder},
            )
            if row is None:
                return None
            record_audit(
                conn, actor=actor.label, role=actor.role, action="rerun_claimed",
                tenant_id=tenant_id, target=f"run:{row['run_id']}",
                details={"request_id": row["request_id"], "holder": holder,
                         "before": {"request": "pending"},
                         "after": {"request": "claimed", "new_run_id": row["new_run_id"]}},
            )  # fmt: skip
        return json_ready(row)

    def pending_reruns(self, tenant_id: str) -> list[dict[str, Any]]:
        """Return the tenant's pending rerun requests, oldest first."""
        with self.db.connection() as conn:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    f"SELECT {_RERUN_COLS} FROM rerun_requests WHERE tenant_id = %s"
                    " AND status = 'pending' ORDER BY requested_at, request_id",
                    (tenant_id,),
                )
                return [json_ready(r) for r in cur.fetchall()]


_RERUN_COLS = (
    "request_id, run_id, tenant_id, project_id, phase, role, playbook, attempt, reason,"
    " requested_by, requested_at, status, claimed_by, claimed_at, new_run_id"
)


def _one(conn: psycopg.Connection, query: str, params: Any) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchone()


def _tenant_state(conn: psycopg.Connection, tenant_id: str) -> dict[str, Any]:
    row = _one(
        conn,
        "SELECT status, paused_reason, owner_sees_tokens FROM tenants WHERE tenant_id = %s"
        " FOR UPDATE",
        (tenant_id,),
    )
    if row is None:
        raise NotFound(f"unknown tenant {tenant_id!r}")
    return row


def _audit_change(
    conn: psycopg.Connection,
    actor: Actor,
    *,
    action: str,
    tenant_id: str,
    target: str,
    reason: str,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    """Record an action's audit row: who, what, why, and the state before and after."""
    record_audit(
        conn, actor=actor.label, role=actor.role, action=action, tenant_id=tenant_id,
        target=target, details={"reason": reason, "before": before, "after": after},
    )  # fmt: skip


def _tenant_changed(
    conn: psycopg.Connection,
    tenant_id: str,
    before: dict[str, Any],
    *,
    actor: Actor,
    reason: str,
    action: str,
    target: str,
) -> dict[str, Any]:
    """Audit a change of the tenant's row (``before`` read ahead of it); return before/after."""
    after = _tenant_state(conn, tenant_id)
    _audit_change(
        conn, actor, action=action, tenant_id=tenant_id, target=target, reason=reason,
        before=before, after=after,
    )  # fmt: skip
    return {"tenant_id": tenant_id, "before": before, "after": after}


def _project_state(
    conn: psycopg.Connection, project_id: str, tenant_id: str | None
) -> dict[str, Any]:
    row = _one(
        conn,
        "SELECT tenant_id, current_phase, phase_entered_at FROM projects WHERE project_id = %s"
        " AND (%s::text IS NULL OR tenant_id = %s) FOR UPDATE",
        (project_id, tenant_id, tenant_id),
    )
    if row is None:
        raise NotFound(f"unknown project {project_id!r}")
    return json_ready(row)
