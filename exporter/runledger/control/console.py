"""The console: server-rendered pages for admins, support, finance and owners.

Pages use a login session (``_session.py``); every form posts the session's CSRF token.
Owners see only their tenant, in dollars and time (token counts when the tenant allows).
docs/console.md describes each page and action.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from pydantic import ValidationError
from werkzeug.wrappers.response import Response as WResponse

from runledger import _env
from runledger.alert_rules import alert_names
from runledger.control import _charts, _embed, alerts, quality
from runledger.control._auth import public
from runledger.control._console_requests import (
    EmbedLink,
    ExportQuery,
    Impersonate,
    JudgeForm,
    NotificationsForm,
    OverviewQuery,
    Pause,
    RaiseCapForm,
    Reopen,
    Rerun,
    TokenVisibility,
    UnfreezeForm,
)
from runledger.control._errors import ApiError
from runledger.control._requests import AlertOutcome, SilenceCreate, TenantNotifications
from runledger.control._session import COOKIE, PageError, check_tenant, page, sessions, viewer
from runledger.control.actions import (
    actions,
    console_store,
    csv_response,
    export_filters,
    parse_args,
)
from runledger.store import CapAdmin
from runledger.store.cap_admin import TEMPORARY_RAISE_HOURS
from runledger.store.console import Filters
from runledger.store.console_actions import Actor, NotFound, Refused
from runledger.store.quality import active_freezes
from runledger.store.tokens import Principal
from runledger.validation import describe, field_errors

__all__ = ["bp"]

bp = Blueprint("console", __name__)

STAFF = ("admin", "support", "finance")
EVERYONE = ("admin", "support", "finance", "owner", "agent")


# -- helpers --------------------------------------------------------------------------------


def _actor() -> Actor:
    actor: Principal = g.actor
    who = viewer()
    label = actor.label if who is actor else f"{actor.label} as owner of {who.tenant_id}"
    return Actor(label, actor.role)


def _viewer_sees_tokens(tenant_id: str) -> bool:
    """Refuse a viewer of another tenant; say whether the viewer sees raw token counts of
    ``tenant_id`` (staff always; an owner when the tenant allows it)."""
    check_tenant(tenant_id)
    tenant = console_store().tenant(tenant_id)
    return viewer().role != "owner" or bool(tenant and tenant["owner_sees_tokens"])


def _form(model: type[Any]) -> Any:
    try:
        return parse_args(model, request.form)
    except ApiError as exc:
        raise PageError(400, exc.message) from None


def _done(target: str, message: str) -> WResponse:
    path, _, fragment = target.partition("#")
    joined = f"{path}{'&' if '?' in path else '?'}done={quote(message)}"
    return redirect(joined + (f"#{fragment}" if fragment else ""), code=303)


def _run_action(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:  # the API's shared code refused: same status, same words
        raise PageError(exc.status, exc.message) from None
    except NotFound as exc:
        raise PageError(404, str(exc)) from None
    except (Refused, ValueError) as exc:
        raise PageError(409, str(exc)) from None
    except LookupError as exc:
        raise PageError(404, str(exc)) from None


def _grafana(trace_id: str | None) -> dict[str, str]:
    base = (os.environ.get(_env.GRAFANA_URL) or "").rstrip("/")
    if not base or not trace_id:
        return {}
    tempo = {
        "datasource": "tempo",
        "queries": [{"refId": "A", "queryType": "traceql", "query": trace_id}],
    }
    loki = {
        "datasource": "loki",
        "queries": [{"refId": "A", "expr": f'{{service_name=~".+"}} | trace_id="{trace_id}"'}],
    }
    tempo_q, loki_q = quote(json.dumps(tempo)), quote(json.dumps(loki))
    return {
        "trace": f"{base}/explore?orgId=1&left={tempo_q}",
        "logs": f"{base}/explore?orgId=1&left={loki_q}",
    }


def _banners(who: Principal) -> list[dict[str, Any]]:
    if who.role == "owner" and who.tenant_id:
        return console_store().banners(audience="owner", tenant_id=who.tenant_id)
    if who.role in STAFF:
        return console_store().banners(audience="admin", tenant_id=None)
    return []


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    session = g.get("session")
    return {
        "charts": _charts,
        "csrf_token": session.csrf_token if session else "",
        "who": g.get("viewer"),
        "actor": g.get("actor"),
        "impersonating": session.impersonating if session else None,
        "grafana": _grafana,
        "raise_hours": TEMPORARY_RAISE_HOURS,
        "done": request.args.get("done"),
    }


def _render(template: str, **context: Any) -> str:
    who: Principal | None = g.get("viewer")
    embed_tenant = context.get("embed_tenant")
    if embed_tenant:
        banners = console_store().banners(audience="owner", tenant_id=embed_tenant)
    else:
        banners = _banners(who) if who else []
        tenant = context.get("tenant")
        if who and who.role in STAFF and tenant:
            # Staff on a tenant's page also see (and admins judge) that tenant's owner banners.
            banners += console_store().banners(audience="owner", tenant_id=tenant["tenant_id"])
    return render_template(template, banners=banners, **context)


@bp.after_app_request
def _headers(resp: Response) -> WResponse:
    if resp.mimetype == "text/html":
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self'; img-src 'self' data:; script-src 'none';"
            " frame-ancestors " + ("*" if request.endpoint == "console.embed" else "'none'"),
        )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


@bp.app_errorhandler(PageError)
def _page_error(exc: PageError) -> tuple[str, int]:
    return _render("error.html", message=exc.message, status=exc.status), exc.status


# -- login ----------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith("/") or target.startswith("//"):
        return url_for("console.home")
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


LOGIN_COOKIE = "rl_login_csrf"


def _secure_cookie() -> bool:
    return os.environ.get(_env.CONSOLE_INSECURE_COOKIE) != "1"


def _login_form(error: str | None, status: int) -> Any:
    """Render the login form with a fresh CSRF token, also set as a cookie (double submit:
    there is no session yet to hold it)."""
    token = secrets.token_urlsafe(24)
    page = _render("login.html", next=request.values.get("next", ""), error=error,
                   login_csrf=token)  # fmt: skip
    resp = current_app.make_response((page, status))
    resp.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, secure=_secure_cookie(),
                    samesite="Strict", path="/login")  # fmt: skip
    return resp


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    """Log in with an API token; the session then acts as that token."""
    if request.method == "GET":
        return _login_form(None, 200)
    sent = request.form.get("csrf_token", "")
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _login_form("The form's CSRF token is missing or wrong: log in again.", 400)
    token = (request.form.get("token") or "").strip()
    opened = sessions().open(token) if token and len(token) < 200 else None
    if opened is None:
        return _login_form("That token is unknown or revoked.", 401)
    session_id, _principal = opened
    resp = redirect(_safe_next(request.form.get("next")), code=303)
    resp.set_cookie(
        COOKIE, session_id, max_age=int(sessions().hours * 3600), httponly=True,
        secure=_secure_cookie(), samesite="Strict", path="/",
    )  # fmt: skip
    resp.delete_cookie(LOGIN_COOKIE, path="/login")
    return resp


@bp.post("/logout")
@page(*EVERYONE)
def logout() -> WResponse:
    """End the session (and any impersonation)."""
    if g.session.impersonating:
        _end_impersonation()
    sessions().end(request.cookies.get(COOKIE, ""))
    resp = redirect(url_for("console.login"), code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@bp.get("/")
@page("admin", "support", "finance", "owner")
def home() -> WResponse:
    """Send staff to the admin overview and an owner to its tenant page."""
    who = viewer()
    if who.role == "owner":
        return redirect(url_for("console.tenant_page", tenant_id=who.tenant_id))
    return redirect(url_for("console.admin"))


# -- admin overview -------------------------------------------------------------------------


@bp.get("/admin")
@page(*STAFF)
def admin() -> str:
    """Today's spend by tenant and model, failures, stuck projects, caps at 80%+."""
    q = _query(OverviewQuery)
    filters = Filters(tenant=q.tenant, model=q.model, phase=q.phase)
    data = console_store().overview(filters, failures=viewer().role != "finance")
    with current_app.extensions["runledger.db"].connection() as conn:
        frozen = active_freezes(conn)
    return _render("admin.html", data=data, q=q, tenants=console_store().tenants(), frozen=frozen)


def _query(model: type[Any]) -> Any:
    args = {k: v for k, v in request.args.items() if k != "done"}  # a form's "Done" message
    try:
        return parse_args(model, args)
    except ApiError as exc:
        raise PageError(400, exc.message) from None


# -- tenant page ----------------------------------------------------------------------------


def _tenant_context(tenant_id: str, *, who_role: str) -> dict[str, Any]:
    store = console_store()
    tenant = store.tenant(tenant_id)
    if tenant is None:
        raise PageError(404, f"unknown tenant {tenant_id!r}")
    cap = CapAdmin(current_app.extensions["runledger.db"], clock=current_app.config.get("CLOCK"))
    status = cap.status(tenant_id)
    page_data = store.tenant_page(tenant_id)
    return {
        "tenant": tenant,
        "cap": status,
        "changes": cap.changes(tenant_id, limit=10),
        "page": page_data,
        "trend_points": [(d["day"].strftime("%m-%d"), d["cost_usd"]) for d in page_data["trend"]],
        "show_tokens": who_role != "owner" or tenant["owner_sees_tokens"],
    }


@bp.get("/tenants/<tenant_id>")
@page("admin", "support", "finance", "owner")
def tenant_page(tenant_id: str) -> str:
    """Caps and spend today, trend, time-to-gate, ships, proofs, banners, muting."""
    check_tenant(tenant_id)
    role = viewer().role
    ctx = _tenant_context(tenant_id, who_role=role)
    audit = console_store().audit(tenant_id, limit=15) if role in STAFF else []
    muting: dict[str, Any] = {}
    if role in ("admin", "support", "owner"):
        muting["silences"] = alerts.silences(tenant_id)
        muting["owner_alerts"] = alert_names("owner")
    if role in ("admin", "owner"):
        settings = alerts.notification_settings(tenant_id)
        muting["notifications"] = settings.public() if settings else None
    return _render("tenant.html", audit=audit, embed=False, muting=muting, **ctx)


@bp.get("/embed/<signed>")
@public
def embed(signed: str) -> Any:
    """An owner's signed, expiring, read-only view of one tenant."""
    try:
        tenant_id = _embed.verify(signed)
    except _embed.EmbedRefused as exc:
        return render_template("error.html", message=str(exc), status=403, banners=[]), 403
    ctx = _tenant_context(tenant_id, who_role="owner")
    return _render("tenant.html", audit=[], embed=True, embed_tenant=tenant_id, **ctx)


@bp.post("/tenants/<tenant_id>/pause")
@page("admin")
def pause_form(tenant_id: str) -> WResponse:
    """Form: pause the tenant."""
    return _set_paused_form(tenant_id, paused=True)


@bp.post("/tenants/<tenant_id>/resume")
@page("admin")
def resume_form(tenant_id: str) -> WResponse:
    """Form: resume the tenant."""
    return _set_paused_form(tenant_id, paused=False)


def _set_paused_form(tenant_id: str, *, paused: bool) -> WResponse:
    req = _form(Pause)
    _run_action(actions().set_paused, tenant_id, paused=paused, reason=req.reason, actor=_actor())
    done = "tenant paused" if paused else "tenant resumed"
    return _done(url_for("console.tenant_page", tenant_id=tenant_id), done)


@bp.post("/tenants/<tenant_id>/token-visibility")
@page("admin")
def token_visibility_form(tenant_id: str) -> WResponse:
    """Form: let the tenant's owners see raw token counts, or not."""
    req = _form(TokenVisibility)
    _run_action(
        actions().set_owner_sees_tokens, tenant_id, allowed=req.allowed, reason=req.reason,
        actor=_actor(),
    )  # fmt: skip
    return _done(url_for("console.tenant_page", tenant_id=tenant_id), "token visibility changed")


@bp.post("/tenants/<tenant_id>/raise-cap")
@page("admin", "finance")
def raise_cap_form(tenant_id: str) -> WResponse:
    """Form: raise the daily cap (permanently, or the 72-hour temporary raise)."""
    req = _form(RaiseCapForm)
    actor = _actor()
    cap = CapAdmin(current_app.extensions["runledger.db"], clock=current_app.config.get("CLOCK"))
    if req.temporary:
        _run_action(
            cap.temporary_raise, tenant_id, reason=req.reason, author=actor.label,
            author_role=actor.role, new_cap_usd=req.new_cap_usd,
        )  # fmt: skip
    else:
        if req.new_cap_usd is None:
            raise PageError(400, "new_cap_usd is required for a permanent change")
        _run_action(
            cap.change_cap, tenant_id, new_cap_usd=req.new_cap_usd, reason=req.reason,
            author=actor.label, author_role=actor.role,
        )  # fmt: skip
    return _done(url_for("console.tenant_page", tenant_id=tenant_id) + "#caps", "cap raised")


@bp.post("/tenants/<tenant_id>/embed-link")
@page("admin", "owner")
def embed_link_form(tenant_id: str) -> str:
    """Form: mint an embed link for the tenant and show it once."""
    check_tenant(tenant_id)
    req = _form(EmbedLink)
    token, expires = _embed.mint(tenant_id, req.ttl_minutes * 60)
    url = url_for("console.embed", signed=token, _external=True)
    return _render("embed_link.html", url=url, expires=expires, tenant_id=tenant_id)


# -- muting, notification settings, judged alerts, unfreeze --------------------------------
# Each form calls the same function as its API route (control/alerts.py, control/quality.py),
# so the checks, the Alertmanager call and the audit row are the API's.


def _back(target: str | None, default: str) -> str:
    """Return the page a form came from (this service's, without an earlier "done")."""
    if not target:
        return default
    path, _, fragment = target.partition("#")
    parts = urlsplit(_safe_next(path))
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("done="))
    return parts.path + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")


@bp.post("/tenants/<tenant_id>/silences")
@page("admin", "owner")
def mute_form(tenant_id: str) -> WResponse:
    """Form: mute one owner alert (or all of them) of the tenant for a while, with a reason."""
    check_tenant(tenant_id)
    req = _form_as(SilenceCreate, {**request.form.to_dict(), "tenant": tenant_id})
    silence = _run_action(alerts.mute, req, viewer(), _actor())
    what = silence.alertname or "all owner alerts"
    target = url_for("console.tenant_page", tenant_id=tenant_id) + "#muting"
    return _done(target, f"{what} muted until {_when(silence.ends_at)} UTC")


@bp.post("/tenants/<tenant_id>/silences/<silence_id>/remove")
@page("admin", "owner")
def unmute_form(tenant_id: str, silence_id: str) -> WResponse:
    """Form: remove one of the tenant's mutes (expire its Alertmanager silence)."""
    check_tenant(tenant_id)
    known = {s.silence_id for s in alerts.silences(tenant_id)}
    if silence_id not in known:
        raise PageError(404, f"tenant {tenant_id!r} has no mute {silence_id!r} in force")
    _run_action(alerts.unmute, silence_id, viewer(), _actor())
    target = url_for("console.tenant_page", tenant_id=tenant_id) + "#muting"
    return _done(target, "mute removed")


@bp.post("/tenants/<tenant_id>/notifications")
@page("admin", "owner")
def notifications_form(tenant_id: str) -> WResponse:
    """Form: where the tenant's owner alerts go (owner emails, Slack webhook, opt-in)."""
    check_tenant(tenant_id)
    form = _form(NotificationsForm)
    current = alerts.notification_settings(tenant_id)
    if current is None:
        raise PageError(404, f"unknown tenant {tenant_id!r}")
    slack = None if form.clear_slack else form.slack_webhook_url or current.slack_webhook_url
    data: dict[str, Any] = {"owner_emails": form.emails(), "slack_opt_in": form.slack_opt_in}
    if slack:
        data["slack_webhook_url"] = slack
    req = _form_as(TenantNotifications, data)
    _run_action(alerts.save_notifications, tenant_id, req, viewer(), _actor())
    target = url_for("console.tenant_page", tenant_id=tenant_id) + "#notifications"
    return _done(target, "notification settings saved")


@bp.post("/banners/<int:notification_id>/judge")
@page("admin")
def judge_form(notification_id: int) -> WResponse:
    """Form on a banner: its alert was a true or a false positive (alert precision)."""
    form = _form(JudgeForm)
    banner = console_store().banner(notification_id)
    if banner is None:
        raise PageError(404, f"no banner {notification_id}")
    if not (banner["fingerprint"] and banner["alertname"] and banner["starts_at"]):
        raise PageError(409, "this banner came from no Alertmanager alert: nothing to judge")
    req = _form_as(AlertOutcome, {
        "fingerprint": banner["fingerprint"], "alertname": banner["alertname"],
        "started_at": banner["starts_at"], "outcome": form.outcome, "note": form.note,
    })  # fmt: skip
    _run_action(alerts.judge, req, _actor())
    verdict = form.outcome.replace("_", " ")
    return _done(_back(form.back, url_for("console.admin")), f"alert judged {verdict}")


@bp.post("/playbooks/<playbook>/unfreeze")
@page("admin")
def unfreeze_form(playbook: str) -> WResponse:
    """Form: lift a playbook's Publisher freeze, with a reason."""
    form = _form(UnfreezeForm)
    lifted = _run_action(quality.lift_freeze, playbook, form.reason, _actor())
    target = _back(form.back, url_for("console.admin") + "#frozen")
    return _done(target, f"Publisher of {lifted.playbook} unfrozen")


def _form_as(model: type[Any], data: dict[str, Any]) -> Any:
    """Validate ``data`` (a form with server-side fields added) as an API request model."""
    data = {k: v for k, v in data.items() if v not in ("", None) and k != "csrf_token"}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PageError(400, describe(field_errors(exc))) from None


# -- impersonation --------------------------------------------------------------------------


@bp.post("/impersonate")
@page("support")
def impersonate() -> WResponse:
    """Support starts acting as a tenant's owner (audited, marked on every page)."""
    req = _form(Impersonate)
    _run_action(sessions().impersonate, g.session, req.tenant, req.reason)
    _impersonation_event("impersonation_started", req.tenant, req.reason)
    return _done(url_for("console.tenant_page", tenant_id=req.tenant), "impersonating")


@bp.post("/impersonate/end")
@page("support", "owner")
def impersonate_end() -> WResponse:
    """Support stops acting as the owner."""
    if g.actor.role != "support" or not g.session.impersonating:
        raise PageError(409, "no impersonation is active in this session")
    _end_impersonation()
    return _done(url_for("console.admin"), "impersonation ended")


def _end_impersonation() -> None:
    tenant = g.session.impersonating
    sessions().impersonate(g.session, None, None)
    _impersonation_event("impersonation_ended", tenant, g.session.impersonation_reason)


def _impersonation_event(kind: str, tenant: str, reason: str | None) -> None:
    """Record the impersonation in the ledger as the spec's events, on a console run."""
    from runledger.control._impersonation import emit

    emit(kind, tenant=tenant, actor=g.actor.label, reason=reason, session=g.session)


# -- project page ---------------------------------------------------------------------------


@bp.get("/projects/<project_id>")
@page("admin", "support", "owner")
def project_page(project_id: str) -> str:
    """Phase timeline, artifacts, open flags, next action and why it is blocked."""
    store = console_store()
    project = store.project(project_id)
    if project is None:
        raise PageError(404, f"unknown project {project_id!r}")
    show_tokens = _viewer_sees_tokens(project["tenant_id"])
    data = store.project_page(project)
    return _render("project.html", project=project, data=data, show_tokens=show_tokens)


@bp.post("/projects/<project_id>/reopen")
@page("admin", "support")
def reopen_form(project_id: str) -> WResponse:
    """Form: reopen a phase of the project."""
    req = _form(Reopen)
    _run_action(
        actions().reopen_phase, project_id, phase=req.phase, reason=req.reason, actor=_actor(),
        tenant_id=None,
    )  # fmt: skip
    return _done(url_for("console.project_page", project_id=project_id), "phase reopened")


# -- run page -------------------------------------------------------------------------------


@bp.get("/runs/<run_id>")
@page("admin", "support", "owner")
def run_page(run_id: str) -> str:
    """The run's events, costs, errors, artifacts, spans and links to trace and logs."""
    store = console_store()
    run = store.run(run_id)
    if run is None:
        raise PageError(404, f"unknown run {run_id!r}")
    show_tokens = _viewer_sees_tokens(run["tenant_id"])
    return _render("run.html", run=run, data=store.run_page(run), show_tokens=show_tokens)


@bp.post("/runs/<run_id>/rerun")
@page("admin", "support")
def rerun_form(run_id: str) -> WResponse:
    """Form: ask the Coordinator to rerun this run's step."""
    req = _form(Rerun)
    _run_action(actions().request_rerun, run_id, reason=req.reason, actor=_actor(), tenant_id=None)
    return _done(url_for("console.run_page", run_id=run_id), "rerun requested")


# -- export ---------------------------------------------------------------------------------


@bp.get("/export")
@page("admin", "support", "finance", "owner")
def export_page() -> str:
    """The CSV export's filters."""
    tenants = console_store().tenants() if viewer().tenant_id is None else [viewer().tenant_id]
    return _render("export.html", tenants=tenants)


@bp.get("/export/runs.csv")
@page("admin", "support", "finance", "owner")
def export_csv() -> WResponse:
    """Stream the filtered runs as CSV (the console's twin of /v1/export/runs.csv)."""
    try:
        query = parse_args(ExportQuery)
        filters = export_filters(query, viewer())
    except ApiError as exc:
        raise PageError(exc.status, exc.message) from None
    except ValidationError as exc:  # pragma: no cover - parse_args converts these
        raise PageError(400, describe(field_errors(exc))) from None
    return csv_response(filters, viewer())


# -- template filters -----------------------------------------------------------------------


@bp.app_template_filter("usd")
def _usd(value: Any) -> str:
    amount = Decimal(str(value or 0))
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:,.4f}"


@bp.app_template_filter("when")
def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


@bp.app_template_filter("secs")
def _secs(value: float | None) -> str:
    return _dur(timedelta(seconds=float(value or 0)))


@bp.app_template_filter("dur")
def _dur(value: timedelta | None) -> str:
    if value is None:
        return ""
    s = int(value.total_seconds())
    if s < 60:
        return f"{value.total_seconds():.1f} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
