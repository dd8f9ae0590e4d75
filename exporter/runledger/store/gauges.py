"""Scrape-time gauge reads: today's spend and caps per tenant, stuck projects, queues."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

__all__ = [
    "active_runs",
    "alert_judgements",
    "frozen_playbooks",
    "stuck_projects",
    "tenants_today",
]

# Spend is the ledger's record of the day (every event's cost_usd); the cap is the one in
# force now (the base cap or an unexpired temporary raise). Blocked is the cap's own
# definition under that cap (cap_blocked_under, migration 0002): the spend reached it, or a
# request was refused and the free room still falls short of what it needed; the same as
# caps.blocked and GET /v1/caps/<tenant>.
_TENANTS_SQL = """
SELECT t.tenant_id, t.status = 'paused', cap_effective_usd(t.tenant_id, %(now)s),
       COALESCE(c.spent_usd, 0),
       COALESCE(cap_blocked_under(c, cap_effective_usd(t.tenant_id, %(now)s)), false),
       COALESCE(b.burn, 0), COALESCE(o.overdue, 0)
FROM tenants t
LEFT JOIN caps c ON c.tenant_id = t.tenant_id AND c.date = %(today)s
LEFT JOIN (
    SELECT tenant_id, sum(cost_usd) AS burn FROM events
    WHERE occurred_at > %(burn_start)s AND occurred_at <= %(now)s GROUP BY tenant_id
) b ON b.tenant_id = t.tenant_id
LEFT JOIN (
    SELECT tenant_id, count(*) AS overdue FROM proofs
    WHERE completed_at IS NULL AND due_at < %(now)s GROUP BY tenant_id
) o ON o.tenant_id = t.tenant_id
ORDER BY t.tenant_id
"""

# A project is in a phase while it entered one and has not advanced since (an advance to
# a next phase sets both times equal; a final advance leaves last_advanced_at later).
_STUCK_SQL = """
SELECT tenant_id, current_phase,
       count(*) FILTER (WHERE phase_entered_at < %(stuck_before)s)
FROM projects
WHERE current_phase IS NOT NULL AND phase_entered_at IS NOT NULL
  AND phase_entered_at >= COALESCE(last_advanced_at, '-infinity'::timestamptz)
GROUP BY tenant_id, current_phase
"""

_ACTIVE_RUNS_SQL = """
SELECT tenant_id, role, status, count(*) FROM runs
WHERE status IN ('queued', 'running') GROUP BY tenant_id, role, status
"""

_FROZEN_SQL = "SELECT playbook FROM publisher_freezes WHERE lifted_at IS NULL"
_JUDGEMENTS_SQL = (
    "SELECT alertname, outcome, count(*) FROM alert_outcomes GROUP BY alertname, outcome"
)


def tenants_today(conn: psycopg.Connection, *, now: datetime, burn_start: datetime) -> list[Any]:
    """Return per tenant: id, paused, cap in force, spend today, blocked, burn, overdue proofs."""
    params = {"now": now, "today": now.date(), "burn_start": burn_start}
    return conn.execute(_TENANTS_SQL, params).fetchall()


def stuck_projects(conn: psycopg.Connection, *, stuck_before: datetime) -> list[Any]:
    """Return (tenant, phase, projects in that phase since before ``stuck_before``)."""
    return conn.execute(_STUCK_SQL, {"stuck_before": stuck_before}).fetchall()


def active_runs(conn: psycopg.Connection) -> list[Any]:
    """Return (tenant, role, status, count) of queued and running runs."""
    return conn.execute(_ACTIVE_RUNS_SQL).fetchall()


def frozen_playbooks(conn: psycopg.Connection) -> list[str]:
    """Return the playbooks whose Publisher is frozen now."""
    return [row[0] for row in conn.execute(_FROZEN_SQL)]


def alert_judgements(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Return how many fired alerts were judged each way, per (alertname, outcome)."""
    return {(name, outcome): int(n) for name, outcome, n in conn.execute(_JUDGEMENTS_SQL)}
