"""Alert state in PostgreSQL: banners, tenants' notification settings, silences, deliveries,
judged alerts (migration 0004)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runledger.store._json import json_ready

__all__ = [
    "Banner",
    "NotificationSettings",
    "Silence",
    "active_silence_for",
    "deliveries",
    "fired_alert",
    "list_banners",
    "list_silences",
    "load_settings",
    "mark_notified",
    "open_banner",
    "record_delivery",
    "record_outcome",
    "record_silence",
    "remove_silence",
    "resolve_alert_banners",
    "resolve_banner",
    "save_settings",
    "silence_by_id",
]


@dataclass(frozen=True)
class NotificationSettings:
    """Where a tenant's owner notifications go."""

    tenant_id: str
    owner_emails: tuple[str, ...]
    slack_webhook_url: str | None
    slack_opt_in: bool

    @property
    def slack_url(self) -> str | None:
        """Return the Slack webhook to post to: set and opted in, else None."""
        return self.slack_webhook_url if self.slack_opt_in and self.slack_webhook_url else None

    def public(self) -> dict[str, Any]:
        """Return the settings for an API answer: the Slack URL (a secret) only masked."""
        url = self.slack_webhook_url
        return {
            "tenant_id": self.tenant_id,
            "owner_emails": list(self.owner_emails),
            "slack_webhook_url": mask_url(url) if url else None,
            "slack_opt_in": self.slack_opt_in,
        }


def mask_url(url: str) -> str:
    """Return ``url`` with everything after its host hidden (incoming webhooks are secrets)."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}{sep}{host}/…" if sep else "…"


@dataclass(frozen=True)
class Banner:
    """One in-app banner (a row of ``notifications``)."""

    notification_id: int
    tenant_id: str | None
    audience: str
    severity: str
    title: str
    body: str
    source: str
    alertname: str | None
    fingerprint: str | None
    starts_at: datetime | None
    runbook_url: str | None
    dashboard_url: str | None
    created_at: datetime
    resolved_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return json_ready(asdict(self))


@dataclass(frozen=True)
class Silence:
    """One mute (an Alertmanager silence) as recorded in ``alert_silences``."""

    silence_id: str
    tenant_id: str
    alertname: str | None
    reason: str
    created_by: str
    created_by_role: str
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    removed_at: datetime | None
    removed_by: str | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return json_ready(asdict(self))


_BANNER_COLUMNS = (
    "notification_id, tenant_id, audience, severity, title, body, source, alertname,"
    " fingerprint, starts_at, runbook_url, dashboard_url, created_at, resolved_at"
)
_SILENCE_COLUMNS = (
    "silence_id, tenant_id, alertname, reason, created_by, created_by_role, starts_at, ends_at,"
    " created_at, removed_at, removed_by"
)


# -- tenant settings ----------------------------------------------------------------------------


def load_settings(conn: psycopg.Connection, tenant_id: str) -> NotificationSettings | None:
    """Return the tenant's notification settings, or None for an unknown tenant."""
    row = conn.execute(
        "SELECT tenant_id, owner_emails, slack_webhook_url, slack_opt_in FROM tenants"
        " WHERE tenant_id = %s",
        (tenant_id,),
    ).fetchone()
    if row is None:
        return None
    return NotificationSettings(row[0], tuple(row[1] or ()), row[2], bool(row[3]))


def save_settings(
    conn: psycopg.Connection,
    tenant_id: str,
    *,
    owner_emails: Sequence[str],
    slack_webhook_url: str | None,
    slack_opt_in: bool,
) -> NotificationSettings | None:
    """Replace the tenant's notification settings; None for an unknown tenant."""
    cur = conn.execute(
        "UPDATE tenants SET owner_emails = %s, slack_webhook_url = %s, slack_opt_in = %s"
        " WHERE tenant_id = %s",
        (list(owner_emails), slack_webhook_url, slack_opt_in, tenant_id),
    )
    if cur.rowcount != 1:
        return None
    return NotificationSettings(tenant_id, tuple(owner_emails), slack_webhook_url, slack_opt_in)


# -- banners ------------------------------------------------------------------------------------


def open_banner(
    conn: psycopg.Connection,
    *,
    dedupe_key: str,
    audience: str,
    tenant_id: str | None,
    severity: str,
    title: str,
    body: str,
    source: str,
    alertname: str | None = None,
    fingerprint: str | None = None,
    starts_at: datetime | None = None,
    runbook_url: str | None = None,
    dashboard_url: str | None = None,
) -> tuple[int, bool, datetime | None]:
    """Show a banner once per ``dedupe_key`` while it is unresolved.

    Returns the banner's id, whether it was created now, and when its owner was last
    notified (None: never). An open banner with the same key gets the latest text.
    """
    row = conn.execute(
        "INSERT INTO notifications (tenant_id, audience, severity, title, body, source,"
        " dedupe_key, alertname, fingerprint, starts_at, runbook_url, dashboard_url)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (dedupe_key) WHERE resolved_at IS NULL DO UPDATE"
        " SET severity = EXCLUDED.severity, title = EXCLUDED.title, body = EXCLUDED.body,"
        "  fingerprint = COALESCE(EXCLUDED.fingerprint, notifications.fingerprint),"
        "  starts_at = COALESCE(EXCLUDED.starts_at, notifications.starts_at),"
        "  dashboard_url = COALESCE(EXCLUDED.dashboard_url, notifications.dashboard_url)"
        " RETURNING notification_id, (xmax = 0), notified_at",
        (tenant_id, audience, severity, title, body, source, dedupe_key, alertname, fingerprint,
         starts_at, runbook_url, dashboard_url),
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0]), bool(row[1]), row[2]


def mark_notified(conn: psycopg.Connection, notification_id: int, at: datetime) -> None:
    """Record that the banner's audience was just sent email/Slack about it."""
    conn.execute(
        "UPDATE notifications SET notified_at = %s WHERE notification_id = %s",
        (at, notification_id),
    )


def resolve_banner(conn: psycopg.Connection, dedupe_key: str) -> bool:
    """Clear the open banner of ``dedupe_key``; return False when none was open."""
    cur = conn.execute(
        "UPDATE notifications SET resolved_at = now()"
        " WHERE dedupe_key = %s AND resolved_at IS NULL",
        (dedupe_key,),
    )
    return cur.rowcount > 0


def _and_tenant(where: str, params: list[Any], tenant_id: str | None) -> tuple[str, list[Any]]:
    """``where`` and its ``params``, narrowed to one tenant when ``tenant_id`` is given."""
    if tenant_id is None:
        return where, params
    return f"{where} AND tenant_id = %s", [*params, tenant_id]


def list_banners(
    conn: psycopg.Connection, *, audience: str, tenant_id: str | None, limit: int = 100
) -> list[Banner]:
    """Return the open banners of an audience (and tenant, for owners), newest first."""
    where, params = _and_tenant("audience = %s", [audience], tenant_id)
    rows = conn.execute(
        f"SELECT {_BANNER_COLUMNS} FROM notifications WHERE {where}"
        " AND resolved_at IS NULL AND dismissed_at IS NULL ORDER BY created_at DESC LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [Banner(*row) for row in rows]


def resolve_alert_banners(conn: psycopg.Connection, *, tenant_id: str, alertname: str) -> int:
    """Clear the tenant's open banners of ``alertname`` (superseded); return how many."""
    cur = conn.execute(
        "UPDATE notifications SET resolved_at = now() WHERE tenant_id = %s AND alertname = %s"
        " AND audience = 'owner' AND resolved_at IS NULL",
        (tenant_id, alertname),
    )
    return cur.rowcount


def fired_alert(
    conn: psycopg.Connection, fingerprint: str, alertname: str
) -> tuple[str, str | None] | None:
    """Return (audience, tenant) of the alert that reached us with ``fingerprint``, or None."""
    row = conn.execute(
        "SELECT audience, tenant_id FROM notifications WHERE fingerprint = %s AND alertname = %s"
        " ORDER BY created_at DESC LIMIT 1",
        (fingerprint, alertname),
    ).fetchone()
    return (row[0], row[1]) if row else None


# -- deliveries and judgements ------------------------------------------------------------------


def record_delivery(
    conn: psycopg.Connection,
    *,
    notification_id: int | None,
    tenant_id: str | None,
    channel: str,
    delivered: bool,
    attempts: int,
    error: str | None,
) -> None:
    """Record one email or Slack delivery after its retries."""
    conn.execute(
        "INSERT INTO alert_deliveries (notification_id, tenant_id, channel, status, attempts,"
        " error) VALUES (%s, %s, %s, %s, %s, %s)",
        (notification_id, tenant_id, channel, "delivered" if delivered else "failed", attempts,
         error),
    )  # fmt: skip


def record_outcome(
    conn: psycopg.Connection,
    *,
    fingerprint: str,
    alertname: str,
    audience: str,
    tenant_id: str | None,
    started_at: datetime,
    outcome: str,
    judged_by: str,
    note: str | None,
) -> int | None:
    """Store one judgement of a fired alert; None when that firing was judged already."""
    row = conn.execute(
        "INSERT INTO alert_outcomes (fingerprint, alertname, audience, tenant_id, started_at,"
        " outcome, judged_by, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (fingerprint, started_at) DO NOTHING RETURNING outcome_id",
        (fingerprint, alertname, audience, tenant_id, started_at, outcome, judged_by, note),
    ).fetchone()
    return int(row[0]) if row else None


# -- silences -----------------------------------------------------------------------------------


def record_silence(
    conn: psycopg.Connection,
    *,
    silence_id: str,
    tenant_id: str,
    alertname: str | None,
    reason: str,
    created_by: str,
    created_by_role: str,
    starts_at: datetime,
    ends_at: datetime,
) -> Silence:
    """Record a silence Alertmanager accepted."""
    row = conn.execute(
        "INSERT INTO alert_silences (silence_id, tenant_id, alertname, reason, created_by,"
        " created_by_role, starts_at, ends_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_SILENCE_COLUMNS}",
        (silence_id, tenant_id, alertname, reason, created_by, created_by_role, starts_at,
         ends_at),
    ).fetchone()  # fmt: skip
    assert row is not None
    return Silence(*row)


def list_silences(
    conn: psycopg.Connection, *, tenant_id: str | None, now: datetime
) -> list[Silence]:
    """Return the silences in force or to come (not removed, not ended), newest first."""
    where, params = _and_tenant("removed_at IS NULL AND ends_at > %s", [now], tenant_id)
    rows = conn.execute(
        f"SELECT {_SILENCE_COLUMNS} FROM alert_silences WHERE {where} ORDER BY created_at DESC",
        params,
    ).fetchall()
    return [Silence(*row) for row in rows]


def silence_by_id(conn: psycopg.Connection, silence_id: str) -> Silence | None:
    """Return the recorded silence, or None."""
    row = conn.execute(
        f"SELECT {_SILENCE_COLUMNS} FROM alert_silences WHERE silence_id = %s", (silence_id,)
    ).fetchone()
    return Silence(*row) if row else None


def remove_silence(conn: psycopg.Connection, silence_id: str, *, removed_by: str) -> bool:
    """Mark a silence removed; False when it was removed already."""
    cur = conn.execute(
        "UPDATE alert_silences SET removed_at = now(), removed_by = %s"
        " WHERE silence_id = %s AND removed_at IS NULL",
        (removed_by, silence_id),
    )
    return cur.rowcount == 1


def active_silence_for(
    conn: psycopg.Connection, tenant_id: str, alertname: str, now: datetime
) -> str | None:
    """Return the id of a silence muting ``alertname`` of the tenant now, or None."""
    row = conn.execute(
        "SELECT silence_id FROM alert_silences WHERE tenant_id = %s AND removed_at IS NULL"
        " AND starts_at <= %s AND ends_at > %s AND (alertname IS NULL OR alertname = %s)"
        " LIMIT 1",
        (tenant_id, now, now, alertname),
    ).fetchone()
    return str(row[0]) if row else None


def deliveries(
    conn: psycopg.Connection, tenant_id: str, *, limit: int = 20
) -> list[dict[str, Any]]:
    """Return the tenant's latest email and Slack deliveries, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT notification_id, channel, status, attempts, error, at FROM alert_deliveries"
            " WHERE tenant_id = %s ORDER BY delivery_id DESC LIMIT %s",
            (tenant_id, limit),
        )
        return [json_ready(r) for r in cur.fetchall()]
