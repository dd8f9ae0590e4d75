"""Alerts API: Alertmanager's webhook, banners, muting, judged alerts, notification settings.

Alertmanager posts every notification to ``/v1/alerts/webhook`` (a shared bearer secret):
each firing alert becomes a banner for its audience (owners: their tenant only) and, for
owner alerts, an email to the tenant's owners and a Slack post when the tenant opted in;
a resolved alert clears its banner. A lease the tenant's daily cap refuses does the same at
once through ``cap_blocked`` (the Prometheus alert is the second line). Muting is an
Alertmanager silence, audited. docs/alerts.md describes the whole path.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, request

from runledger import _env
from runledger.alert_rules import alert_names
from runledger.control._alertmanager import AlertmanagerClient, AlertmanagerError
from runledger.control._auth import ROLES_ATTR, current_principal, require
from runledger.control._batch import json_response, parse_body
from runledger.control._delivery import Message, Notifier, RetryPolicy, SmtpSettings
from runledger.control._errors import ApiError
from runledger.control._requests import (
    AlertmanagerWebhook,
    AlertOutcome,
    SilenceCreate,
    TenantNotifications,
    WebhookAlert,
)
from runledger.store import Database
from runledger.store import alerting as store
from runledger.store.audit import record_audit
from runledger.store.cap_admin import blocked_message
from runledger.store.console_actions import Actor
from runledger.store.tokens import Principal
from runledger.validation import FieldError

__all__ = [
    "ALERTMANAGER_ROLE",
    "CAP_REACHED_ALERT",
    "alertmanager_only",
    "bp",
    "cap_blocked",
    "judge",
    "mute",
    "notification_settings",
    "notifier",
    "save_notifications",
    "silences",
    "unmute",
]

F = TypeVar("F", bound=Callable[..., Any])

ALERTMANAGER_ROLE = "alertmanager"
"""Pseudo-role of the webhook: no token has it; only the shared secret opens the route."""

log = logging.getLogger(__name__)

bp = Blueprint("alerts", __name__)

CAP_REACHED_ALERT = "TenantDailyCapReached"
CAP_NEAR_ALERT = "TenantDailyCapNearlyReached"
DEFAULT_RENOTIFY_S = 12 * 3600.0
CAP_NOTICE_EVERY_S = 5.0
"""A worker looks at a tenant's refused-lease notice at most this often."""
_ADMIN_VIEWERS = ("admin", "support", "finance")


def _db() -> Database:
    db: Database = current_app.extensions["runledger.db"]
    return db


def _now() -> datetime:
    clock = current_app.config.get("CLOCK")
    return clock() if clock is not None else datetime.now(UTC)


def notifier(app: Flask | None = None) -> Notifier:
    """Return the app's notifier, made once from its config and the environment."""
    app = app or current_app
    found: Notifier | None = app.extensions.get("runledger.notifier")
    if found is None:
        smtp = app.config.get("SMTP", SmtpSettings.from_env())
        metrics = app.extensions["runledger.metrics"]
        found = Notifier(
            app.extensions["runledger.db"], smtp=smtp,
            retry=app.config.get("ALERT_RETRY") or RetryPolicy(),
            on_failure=metrics.webhook_failed,
        )  # fmt: skip
        app.extensions["runledger.notifier"] = found
    return found


def _renotify_after() -> timedelta:
    seconds = current_app.config.get("ALERT_RENOTIFY_SECONDS") or os.environ.get(
        _env.ALERT_RENOTIFY_SECONDS
    )
    return timedelta(seconds=float(seconds) if seconds else DEFAULT_RENOTIFY_S)


def _check_tenant(tenant_id: str) -> None:
    _check_scope(current_principal(), tenant_id)


def _check_scope(who: Principal, tenant_id: str) -> None:
    if who.tenant_id is not None and who.tenant_id != tenant_id:
        raise ApiError(403, f"this token may act only for tenant {who.tenant_id!r}")


# -- Alertmanager's webhook ---------------------------------------------------------------------


def _check_webhook_secret() -> None:
    secret = current_app.config.get("ALERT_WEBHOOK_TOKEN") or os.environ.get(
        _env.ALERT_WEBHOOK_TOKEN
    )
    if not secret:
        raise ApiError(
            503, f"the alert webhook is off: set {_env.ALERT_WEBHOOK_TOKEN} on the control service"
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), secret.encode()):
        raise ApiError(401, "invalid webhook token")


def alertmanager_only(view: F) -> F:
    """Allow the view only to Alertmanager: the shared webhook secret, never a user token.

    The authorisation test reads the pseudo-role ``alertmanager`` that this sets."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        _check_webhook_secret()
        return view(*args, **kwargs)

    setattr(inner, ROLES_ATTR, (ALERTMANAGER_ROLE,))
    return inner  # type: ignore[return-value]


def _dedupe_key(alert: WebhookAlert) -> str:
    if alert.labels.get("alertname") == CAP_REACHED_ALERT and alert.labels.get("tenant"):
        # Shared with the immediate notice of a refused lease: one banner, one email.
        return f"cap-reached:{alert.labels['tenant']}"
    return f"alert:{alert.fingerprint}"


def _message(
    banner_id: int | None, tenant: str, title: str, body: str, links: dict[str, str]
) -> Message:
    lines = [body, ""]
    lines += [f"{name}: {link}" for name, link in links.items() if link]
    lines.append("Mute this alert for a while: POST /v1/alerts/silences (with a reason).")
    return Message(banner_id, tenant, f"[runledger] {title} ({tenant})", "\n".join(lines))


def _grafana_link(path: str) -> str:
    """Return the dashboard path as a Grafana URL, or "" when no Grafana is configured."""
    base = os.environ.get(_env.GRAFANA_URL)
    return f"{base.rstrip('/')}{path}" if base and path else ""


def _tenant_exists(conn: Any, tenant_id: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone()
        is not None
    )


@bp.post("/v1/alerts/webhook")
@alertmanager_only
def webhook() -> Response:
    """Store banners for firing alerts, clear resolved ones, notify owners."""
    payload = parse_body(AlertmanagerWebhook)
    opened = resolved = ignored = 0
    to_notify: list[tuple[store.NotificationSettings, Message]] = []
    now = _now()
    renotify = _renotify_after()
    with _db().connection() as conn:
        for alert in payload.alerts:
            labels, notes = alert.labels, alert.annotations
            audience, tenant = labels.get("audience"), labels.get("tenant")
            name = labels.get("alertname", "")
            if audience not in ("owner", "admin") or (audience == "owner" and not tenant):
                ignored += 1
                continue
            if tenant and not _tenant_exists(conn, tenant):
                if audience == "owner":
                    ignored += 1
                    continue
                tenant = None
            key = _dedupe_key(alert)
            if alert.status == "resolved":
                resolved += store.resolve_banner(conn, key)
                continue
            severity = labels.get("severity", "warning")
            if severity not in ("critical", "warning", "info"):
                severity = "warning"
            title = notes.get("summary") or name
            body = notes.get("description") or title
            banner_id, created, notified_at = store.open_banner(
                conn, dedupe_key=key, audience=audience, tenant_id=tenant, severity=severity,
                title=title, body=body, source="alertmanager", alertname=name,
                fingerprint=alert.fingerprint, starts_at=alert.startsAt,
                runbook_url=notes.get("runbook_url"), dashboard_url=notes.get("dashboard"),
            )  # fmt: skip
            opened += created
            if name == CAP_REACHED_ALERT and tenant:
                store.resolve_alert_banners(conn, tenant_id=tenant, alertname=CAP_NEAR_ALERT)
            due = notified_at is None or now - notified_at >= renotify
            if audience == "owner" and tenant and due:
                settings = store.load_settings(conn, tenant)
                if settings is not None:
                    store.mark_notified(conn, banner_id, now)
                    links = {"Runbook": notes.get("runbook_url", ""),
                             "Dashboard": _grafana_link(notes.get("dashboard", ""))}  # fmt: skip
                    to_notify.append((settings, _message(banner_id, tenant, title, body, links)))
    sender = notifier()
    for settings, message in to_notify:
        sender.notify(settings, message)
    return json_response(
        {"opened": opened, "resolved": resolved, "ignored": ignored, "notified": len(to_notify)}
    )


# -- the immediate notice of a refused lease ----------------------------------------------------


def cap_blocked(tenant_id: str, *, cap_usd: Any, spend_usd: Any, needed_usd: Decimal) -> None:
    """Show the owner banner and notify the owners now: the daily cap refused a lease.

    Once per open banner (the Prometheus alert on the same cap shares it); nothing when the
    tenant muted the alert. Called from the lease routes; a failure here is logged and never
    changes the lease's answer.
    """
    # Agents retry refused leases: one notice per tenant and worker every few seconds is
    # enough (the banner stays open), not four statements per refusal.
    recent: dict[str, float] = current_app.extensions.setdefault("runledger.cap_notices", {})
    moment = time.monotonic()
    if moment - recent.get(tenant_id, -CAP_NOTICE_EVERY_S) < CAP_NOTICE_EVERY_S:
        return
    recent[tenant_id] = moment
    try:
        _cap_blocked(tenant_id, cap_usd=cap_usd, spend_usd=spend_usd, needed_usd=needed_usd)
    except Exception:
        recent.pop(tenant_id, None)
        log.exception("could not notify tenant %s of its refused lease", tenant_id)


def _cap_blocked(tenant_id: str, *, cap_usd: Any, spend_usd: Any, needed_usd: Decimal) -> None:
    now = _now()
    text = blocked_message(tenant_id, cap_usd=cap_usd, spend_usd=spend_usd, needed_usd=needed_usd)
    with _db().connection() as conn:
        if store.active_silence_for(conn, tenant_id, CAP_REACHED_ALERT, now):
            return
        banner_id, _created, notified_at = store.open_banner(
            conn, dedupe_key=f"cap-reached:{tenant_id}", audience="owner", tenant_id=tenant_id,
            severity="critical", title="Daily cap reached: new spend is refused", body=text,
            source="cap_block", alertname=CAP_REACHED_ALERT,
            runbook_url=f"docs/runbook.md#{CAP_REACHED_ALERT.lower()}",
        )  # fmt: skip
        store.resolve_alert_banners(conn, tenant_id=tenant_id, alertname=CAP_NEAR_ALERT)
        if notified_at is not None and now - notified_at < _renotify_after():
            return
        settings = store.load_settings(conn, tenant_id)
        if settings is None:
            return
        store.mark_notified(conn, banner_id, now)
    links = {"Runbook": f"docs/runbook.md#{CAP_REACHED_ALERT.lower()}"}
    message = _message(banner_id, tenant_id, "Daily cap reached", text, links)
    notifier().notify(settings, message)


def cap_unblocked(tenant_id: str) -> None:
    """Clear the tenant's cap-reached banner: its cap was raised."""
    current_app.extensions.get("runledger.cap_notices", {}).pop(tenant_id, None)
    with _db().connection() as conn:
        store.resolve_banner(conn, f"cap-reached:{tenant_id}")


# -- banners ------------------------------------------------------------------------------------


@bp.get("/v1/banners")
@require("admin", "support", "finance", "owner")
def banners() -> Response:
    """Answer the caller's open banners: owners their tenant's; admins the admin ones.

    An admin (support, finance) may ask for a tenant's owner banners with ``?tenant=``.
    """
    principal = current_principal()
    tenant = request.args.get("tenant") or None
    if principal.role == "owner":
        if tenant is not None and tenant != principal.tenant_id:
            raise ApiError(403, f"this token may act only for tenant {principal.tenant_id!r}")
        audience, tenant = "owner", principal.tenant_id
    else:
        audience = "owner" if tenant else "admin"
    with _db().connection() as conn:
        found = store.list_banners(conn, audience=audience, tenant_id=tenant)
    return json_response({"banners": [b.as_dict() for b in found]})


# -- muting -------------------------------------------------------------------------------------


def _alertmanager() -> AlertmanagerClient:
    url = current_app.config.get("ALERTMANAGER_URL") or os.environ.get(_env.ALERTMANAGER_URL)
    if not url:
        raise ApiError(
            503, f"muting needs Alertmanager: set {_env.ALERTMANAGER_URL} on the control service"
        )
    return AlertmanagerClient(url)


def _actor(who: Principal, actor: Actor | None) -> Actor:
    return actor or Actor(who.label, who.role)


def mute(req: SilenceCreate, who: Principal, actor: Actor | None = None) -> store.Silence:
    """Mute one alert, or every owner alert, of a tenant: an Alertmanager silence, recorded
    and audited. ``who`` decides what may be muted (an owner: its tenant's owner alerts);
    ``actor`` is who the audit names (default ``who``). The API and the console call this."""
    _check_scope(who, req.tenant)
    now = _now()
    if (req.duration_minutes is None) == (req.ends_at is None):
        problem = FieldError("duration_minutes", "give exactly one of duration_minutes and ends_at")
        raise ApiError(400, f"invalid request: {problem.message}", fields=[problem])
    ends = req.ends_at or now + timedelta(minutes=req.duration_minutes or 0)
    if ends <= now:
        problem = FieldError("ends_at", "must be in the future")
        raise ApiError(400, f"invalid request: ends_at {problem.message}", fields=[problem])
    known = alert_names("owner") if who.role == "owner" else None
    if req.alertname is not None and known is not None and req.alertname not in known:
        problem = FieldError("alertname", f"is not an owner alert; one of: {', '.join(known)}")
        raise ApiError(400, f"invalid request: alertname {problem.message}", fields=[problem])
    with _db().connection() as conn:
        if not _tenant_exists(conn, req.tenant):
            raise ApiError(404, f"unknown tenant {req.tenant!r}")
    matchers = {"tenant": req.tenant}
    if req.alertname is None or who.role == "owner":
        matchers["audience"] = "owner"
    if req.alertname is not None:
        matchers["alertname"] = req.alertname
    by = _actor(who, actor)
    try:
        silence_id = _alertmanager().create_silence(
            matchers, starts_at=now, ends_at=ends, created_by=by.label, comment=req.reason
        )
    except AlertmanagerError as exc:
        raise ApiError(502, f"{exc}; nothing was muted") from None
    with _db().connection() as conn:
        silence = store.record_silence(
            conn, silence_id=silence_id, tenant_id=req.tenant, alertname=req.alertname,
            reason=req.reason, created_by=by.label, created_by_role=by.role,
            starts_at=now, ends_at=ends,
        )  # fmt: skip
        record_audit(
            conn, actor=by.label, role=by.role, action="alert.mute",
            tenant_id=req.tenant, target=silence_id,
            details={"alertname": req.alertname, "ends_at": ends.isoformat(),
                     "reason": req.reason, "matchers": matchers},
        )  # fmt: skip
    return silence


def unmute(silence_id: str, who: Principal, actor: Actor | None = None) -> store.Silence:
    """Remove a mute: expire the Alertmanager silence, record and audit it. An owner may
    remove only its tenant's (another's answers 404, as an unknown one)."""
    with _db().connection() as conn:
        silence = store.silence_by_id(conn, silence_id)
    if silence is None or (who.tenant_id and who.tenant_id != silence.tenant_id):
        raise ApiError(404, f"no such silence {silence_id!r}")
    if silence.removed_at is not None:
        raise ApiError(409, f"silence {silence_id!r} was removed already")
    try:
        _alertmanager().expire_silence(silence_id)
    except AlertmanagerError as exc:
        if "answered 404" not in str(exc):  # Alertmanager forgot it: it mutes nothing
            raise ApiError(502, f"{exc}; the mute is still in force") from None
    by = _actor(who, actor)
    with _db().connection() as conn:
        store.remove_silence(conn, silence_id, removed_by=by.label)
        record_audit(
            conn, actor=by.label, role=by.role, action="alert.unmute",
            tenant_id=silence.tenant_id, target=silence_id,
            details={"alertname": silence.alertname},
        )  # fmt: skip
    return silence


def silences(tenant_id: str | None) -> list[store.Silence]:
    """Return the mutes in force or to come (of one tenant, or all), newest first."""
    with _db().connection() as conn:
        return store.list_silences(conn, tenant_id=tenant_id, now=_now())


@bp.post("/v1/alerts/silences")
@require("admin", "owner")
def create_silence() -> Response:
    """Mute one alert, or every owner alert, of a tenant for a while; audited."""
    req = parse_body(SilenceCreate)
    return json_response(mute(req, current_principal()).as_dict(), 201)


@bp.get("/v1/alerts/silences")
@require("admin", "support", "owner")
def list_silences() -> Response:
    """List the mutes in force or to come (owners: their tenant's)."""
    principal = current_principal()
    tenant = request.args.get("tenant") or None
    if principal.role == "owner":
        if tenant is not None:
            _check_tenant(tenant)
        tenant = principal.tenant_id
    return json_response({"silences": [s.as_dict() for s in silences(tenant)]})


@bp.delete("/v1/alerts/silences/<silence_id>")
@require("admin", "owner")
def delete_silence(silence_id: str) -> Response:
    """Remove a mute: expire the Alertmanager silence; audited."""
    unmute(silence_id, current_principal())
    return json_response({"removed": silence_id})


# -- judged alerts ------------------------------------------------------------------------------


def judge(req: AlertOutcome, actor: Actor) -> int:
    """Record whether a fired alert was a true or a false positive, audited; return the
    outcome's id. Admins only (the callers check the role). The API and the console call it."""
    with _db().connection() as conn:
        fired = store.fired_alert(conn, req.fingerprint, req.alertname)
        if fired is None:
            problem = FieldError("fingerprint", "names no alert that reached runledger")
            raise ApiError(404, f"fingerprint {problem.message}", fields=[problem])
        audience, tenant = fired
        outcome_id = store.record_outcome(
            conn, fingerprint=req.fingerprint, alertname=req.alertname, audience=audience,
            tenant_id=tenant, started_at=req.started_at, outcome=req.outcome,
            judged_by=actor.label, note=req.note,
        )  # fmt: skip
        if outcome_id is None:
            raise ApiError(409, "this firing of the alert was judged already")
        record_audit(
            conn, actor=actor.label, role=actor.role, action="alert.judge",
            tenant_id=tenant, target=req.fingerprint,
            details={"alertname": req.alertname, "outcome": req.outcome},
        )  # fmt: skip
    return outcome_id


@bp.post("/v1/alerts/outcomes")
@require("admin")
def judge_alert() -> Response:
    """Record whether a fired alert was a true or a false positive (alert precision)."""
    req = parse_body(AlertOutcome)
    principal = current_principal()
    outcome_id = judge(req, Actor(principal.label, principal.role))
    return json_response({"outcome_id": outcome_id, "outcome": req.outcome}, 201)


# -- tenant notification settings ---------------------------------------------------------------


@bp.get("/v1/tenants/<tenant_id>/notifications")
@require("admin", "support", "owner")
def get_notifications(tenant_id: str) -> Response:
    """Show where the tenant's owner alerts go (the Slack URL masked) and recent deliveries."""
    _check_tenant(tenant_id)
    with _db().connection() as conn:
        settings = store.load_settings(conn, tenant_id)
        if settings is None:
            raise ApiError(404, f"unknown tenant {tenant_id!r}")
        recent = store.deliveries(conn, tenant_id, limit=20)
    return json_response({**settings.public(), "recent_deliveries": recent})


def notification_settings(tenant_id: str) -> store.NotificationSettings | None:
    """Return the tenant's notification settings (None: unknown tenant)."""
    with _db().connection() as conn:
        return store.load_settings(conn, tenant_id)


def save_notifications(
    tenant_id: str, req: TenantNotifications, who: Principal, actor: Actor | None = None
) -> store.NotificationSettings:
    """Replace where the tenant's owner alerts go; audited (without the addresses). The API
    and the console call this."""
    _check_scope(who, tenant_id)
    if req.slack_opt_in and req.slack_webhook_url is None:
        problem = FieldError("slack_webhook_url", "is required when slack_opt_in is true")
        raise ApiError(400, f"invalid request: slack_webhook_url {problem.message}",
                       fields=[problem])  # fmt: skip
    by = _actor(who, actor)
    with _db().connection() as conn:
        settings = store.save_settings(
            conn, tenant_id, owner_emails=[str(e) for e in req.owner_emails],
            slack_webhook_url=str(req.slack_webhook_url) if req.slack_webhook_url else None,
            slack_opt_in=req.slack_opt_in,
        )  # fmt: skip
        if settings is None:
            raise ApiError(404, f"unknown tenant {tenant_id!r}")
        record_audit(
            conn, actor=by.label, role=by.role, action="tenant.notifications",
            tenant_id=tenant_id, target=tenant_id,
            details={"owner_emails": len(req.owner_emails),
                     "slack_webhook": req.slack_webhook_url is not None,
                     "slack_opt_in": req.slack_opt_in},
        )  # fmt: skip
    return settings


@bp.put("/v1/tenants/<tenant_id>/notifications")
@require("admin", "owner")
def put_notifications(tenant_id: str) -> Response:
    """Replace where the tenant's owner alerts go; audited (without the addresses)."""
    _check_tenant(tenant_id)
    req = parse_body(TenantNotifications)
    return json_response(save_notifications(tenant_id, req, current_principal()).public())
