"""Console pages and quick actions through the Flask test client on a real ledger."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from _support import event
from _support.alerting import am_payload, rule_alert
from _support.console import bearer, csrf_of, login, login_csrf, seed_run
from runledger.store.quality import freeze_publisher

USD_RE = re.compile(r'<td class="num" data-usd="([^"]+)">')


@pytest.fixture
def acme(client: Any, make_tenant: Any, make_token: Any) -> dict[str, str]:
    make_tenant("acme", "100")
    make_tenant("other", "100")
    return {
        "agent": make_token("agent", "acme"),
        "other_agent": make_token("agent", "other"),
        "admin": make_token("admin"),
        "support": make_token("support"),
        "finance": make_token("finance"),
        "owner": make_token("owner", "acme"),
        "other_owner": make_token("owner", "other"),
    }


def _otlp_span(
    trace_id: str, span_id: str, name: str, start_ns: int, end_ns: int, attrs: dict[str, Any]
) -> dict[str, Any]:
    """An OTLP/JSON export request holding one client span with ``attrs``."""

    def value(v: Any) -> dict[str, Any]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}

    span = {
        "traceId": trace_id, "spanId": span_id, "name": name, "kind": 3,
        "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns),
        "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
    }  # fmt: skip
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "site-agent"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}


def _table(html: str, table_id: str) -> str:
    start = html.index(f'id="{table_id}"')
    return html[start : html.index("</table>", start)]


def test_overview_figures_equal_the_ledger(client: Any, acme: dict[str, str], sql: Any) -> None:
    sent = {"acme": Decimal(0), "other": Decimal(0)}
    for i, (tenant, cost, model) in enumerate(
        [("acme", "0.125", "gpt-4.1"), ("acme", "1.5", "claude-sonnet-4"),
         ("other", "0.333333333", "gpt-4.1"), ("other", "2.25", "gpt-4.1")]
    ):  # fmt: skip
        token = acme["agent"] if tenant == "acme" else acme["other_agent"]
        seed_run(client, token, tenant=tenant, project=f"{tenant}-p", run=f"r{i}", cost=cost,
                 model=model)  # fmt: skip
        sent[tenant] += Decimal(cost)
    login(client, acme["admin"])
    html = client.get("/admin").get_data(as_text=True)

    by_tenant = _table(html, "spend-by-tenant")
    shown = dict(re.findall(r'>(\w+)</a></td><td class="num" data-usd="([^"]+)"', by_tenant))
    ledger = dict(sql(
        "SELECT tenant_id, sum(cost_usd)::text FROM events"
        " WHERE occurred_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        " GROUP BY tenant_id"
    ))  # fmt: skip
    assert {t: Decimal(v) for t, v in shown.items()} == {t: Decimal(v) for t, v in ledger.items()}
    assert {t: Decimal(v) for t, v in shown.items()} == sent

    by_model = dict(re.findall(r'<td>([\w.-]+)</td><td class="num" data-usd="([^"]+)"',
                               _table(html, "spend-by-model")))  # fmt: skip
    assert Decimal(by_model["gpt-4.1"]) == Decimal("0.125") + Decimal("0.333333333") + Decimal(
        "2.25"
    )
    assert Decimal(by_model["claude-sonnet-4"]) == Decimal("1.5")

    filtered = client.get("/admin?tenant=acme&model=gpt-4.1").get_data(as_text=True)
    assert USD_RE.findall(_table(filtered, "spend-by-tenant")) == ["0.125000000"]
    assert client.get("/admin?phase=bad%20phase").status_code == 400


def test_failures_link_run_trace_and_artifact(
    client: Any, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch, sql: Any
) -> None:
    monkeypatch.setenv("RUNLEDGER_GRAFANA_URL", "http://grafana.test:3000")
    seed_run(client, acme["agent"], tenant="acme", project="p1", run="r-bad", fail="lint failed")
    login(client, acme["admin"])
    failures = _table(client.get("/admin").get_data(as_text=True), "failures")
    assert "lint failed" in failures and 'href="/runs/r-bad"' in failures
    assert "http://grafana.test:3000/explore" in failures and "site/index.html@2" in failures
    run = client.get("/runs/r-bad").get_data(as_text=True)
    assert 'id="trace-link"' in run and 'id="logs-link"' in run and "ab" * 16 in run
    monkeypatch.delenv("RUNLEDGER_GRAFANA_URL")
    assert 'id="trace-link"' not in client.get("/runs/r-bad").get_data(as_text=True)
    assert 'id="spans"' not in client.get("/runs/r-bad").get_data(as_text=True)
    # The agent's instrumentation exports the run's model call over OTLP (POST /v1/traces);
    # the run page then lists the span the receiver stored, with its duration.
    end = time.time_ns() - 1_000_000_000
    resp = client.post("/v1/traces", json=_otlp_span(
        "ab" * 16, "cd00000000000001", "chat gpt-4.1", end - 812_500_000, end,
        {"runledger.run": "r-bad", "runledger.project": "p1", "runledger.phase": "build",
         "runledger.role": "implementer", "gen_ai.operation.name": "chat",
         "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4.1",
         "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200},
    ), headers=bearer(acme["agent"]))  # fmt: skip
    assert resp.status_code == 200 and resp.get_json() == {}, resp.get_json()
    assert sql("SELECT run_id, tenant_id, duration_ms FROM trace_spans") == [
        ("r-bad", "acme", 812.5)
    ]
    spans = _table(client.get("/runs/r-bad").get_data(as_text=True), "spans")
    assert "chat gpt-4.1" in spans and ">812.5<" in spans


def test_why_blocked_names_every_reason_with_evidence_and_action(
    client: Any, acme: dict[str, str], db: Any, make_tenant: Any, make_token: Any
) -> None:
    make_tenant("tiny", "0.10")
    agent = make_token("agent", "tiny")
    seed_run(client, agent, tenant="tiny", project="blocked", run="r1", cost="0.25")
    now = datetime.now(UTC)
    env = {"tenant_id": "tiny", "project_id": "blocked", "run_id": "r2", "phase": "build",
           "role": "validator", "playbook": "landing"}  # fmt: skip
    events = [
        event("validation_failed", **env, payload={"reason": "missing alt text"},
              artifact_path="site/index.html", artifact_version=2),
        event("proof_requested", **env, payload={"proof_id": "proof-7",
              "due_at": (now - timedelta(hours=2)).isoformat()},
              occurred_at=(now - timedelta(days=1)).isoformat()),
    ]  # fmt: skip
    resp = client.post("/v1/events", json={"events": events}, headers=bearer(agent))
    assert resp.get_json()["accepted"] == 2
    with db.connection() as conn:  # what the quality sampler does when a sample fails
        freeze_publisher(
            conn, playbook="landing", reason="drift above threshold", actor="quality-sampler",
            day=now.date(), sampled=5, failed=4, failure_rate=0.8, threshold=0.2,
        )  # fmt: skip
    paused = client.post("/v1/tenants/tiny/pause", json={"reason": "invoice overdue"},
                         headers=bearer(acme["admin"]))  # fmt: skip
    assert paused.status_code == 200

    login(client, acme["admin"])
    html = client.get("/projects/blocked").get_data(as_text=True)
    reasons = re.findall(r'data-reason="(\w+)"', html)
    assert reasons == ["cap_reached", "tenant_paused", "publisher_frozen", "failing_validation",
                       "proof_overdue"]  # fmt: skip
    section = html[html.index('id="why-blocked"') : html.index('id="next-action"')]
    assert 'href="/tenants/tiny#raise-cap"' in section  # cap: raise it
    assert "invoice overdue" in section and "resumes the tenant" in section
    assert "drift above threshold" in section and 'action="/playbooks/landing/unfreeze"' in section
    assert "missing alt text" in section and 'href="/runs/r2#rerun"' in section
    assert "proof-7" in section and "completes the proof" in section


ACME_NEAR = "Tenant acme has spent 84.25% of today&#39;s daily cap."
OTHER_REACHED = "Tenant other reached its daily cap"
EXPORTER_DOWN = "Prometheus cannot scrape the runledger exporter."


def test_owner_sees_only_own_tenant_and_own_banners(
    client: Any, acme: dict[str, str], sql: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_run(client, acme["agent"], tenant="acme", project="pa", run="ra")
    seed_run(client, acme["other_agent"], tenant="other", project="po", run="ro")
    # Alertmanager delivers three alerts of the shipped rules to the webhook: an owner
    # warning for acme, an owner critical for other, an admin critical of no tenant.
    monkeypatch.setenv("RUNLEDGER_ALERT_WEBHOOK_TOKEN", "console-webhook-secret")
    hook = client.post("/v1/alerts/webhook", json=am_payload(
        rule_alert("TenantDailyCapNearlyReached", value=0.8425, tenant="acme"),
        rule_alert("TenantDailyCapReached", tenant="other"),
        rule_alert("ExporterDown"),
    ), headers=bearer("console-webhook-secret"))  # fmt: skip
    assert hook.status_code == 200 and hook.get_json()["opened"] == 3, hook.get_json()
    assert sql("SELECT tenant_id, audience, severity FROM notifications ORDER BY 1, 2") == [
        ("acme", "owner", "warning"), ("other", "owner", "critical"), (None, "admin", "critical")
    ]  # fmt: skip
    login(client, acme["owner"])
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith("/tenants/acme")
    page = client.get("/tenants/acme").get_data(as_text=True)
    assert ACME_NEAR in page
    assert OTHER_REACHED not in page and EXPORTER_DOWN not in page
    assert "ro" not in re.findall(r'href="/runs/(\w+)"', page)
    for url in ("/tenants/other", "/projects/po", "/runs/ro"):
        assert client.get(url).status_code == 404, url
    assert client.get("/admin").status_code == 403
    csv_text = client.get("/export/runs.csv").get_data(as_text=True)
    assert ",acme," in csv_text and ",other," not in csv_text
    assert client.get("/export/runs.csv?tenant=other").status_code == 403

    admin = client.application.test_client()
    login(admin, acme["admin"])
    overview = admin.get("/admin").get_data(as_text=True)
    assert EXPORTER_DOWN in overview
    assert ACME_NEAR not in overview and OTHER_REACHED not in overview


def test_owner_token_counts_follow_the_audited_admin_switch(
    client: Any, acme: dict[str, str], sql: Any
) -> None:
    seed_run(client, acme["agent"], tenant="acme", project="pa", run="ra", tokens=(1234, 567))
    owner = client.application.test_client()
    login(owner, acme["owner"])
    assert "1234" not in owner.get("/runs/ra").get_data(as_text=True)
    assert ",,," in owner.get("/export/runs.csv").get_data(as_text=True)  # token columns blank
    resp = client.put("/v1/tenants/acme/owner-token-visibility", headers=bearer(acme["admin"]),
                      json={"allowed": True, "reason": "owner asked for usage detail"})  # fmt: skip
    assert resp.status_code == 200
    assert resp.get_json()["before"]["owner_sees_tokens"] is False
    assert resp.get_json()["after"]["owner_sees_tokens"] is True
    assert "1234 in / 567 out" in owner.get("/runs/ra").get_data(as_text=True)
    audit = sql(
        "SELECT actor, details->>'reason' FROM audit_log WHERE action = 'owner_token_visibility'"
    )
    assert audit == [("test-admin", "owner asked for usage detail")]


def test_form_post_without_csrf_is_refused(client: Any, acme: dict[str, str], sql: Any) -> None:
    login(client, acme["admin"])
    for data in ({"reason": "no token"}, {"reason": "wrong token", "csrf_token": "forged"}):
        resp = client.post("/tenants/acme/pause", data=data)
        assert resp.status_code == 400
        assert "CSRF token is missing or wrong" in resp.get_data(as_text=True)
    assert sql("SELECT status FROM tenants WHERE tenant_id = 'acme'") == [("active",)]


def test_login_form_csrf_and_session_cookie_flags(client: Any, acme: dict[str, str]) -> None:
    # The login form is a form too: without its token (a cookie and a field) it is refused.
    forged = client.post("/login", data={"token": acme["admin"]})
    assert forged.status_code == 400 and "CSRF token is missing or wrong" in forged.get_data(
        as_text=True
    )
    assert client.get("/admin").status_code == 302  # no session was opened
    bad = client.post("/login", data={"token": "rl_nope", "csrf_token": login_csrf(client)})
    assert bad.status_code == 401 and "unknown or revoked" in bad.get_data(as_text=True)
    resp = client.post("/login", data={"token": acme["admin"], "csrf_token": login_csrf(client)})
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("rl_session="))
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert (
        client.get("/admin").headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
    )


def test_pause_resume_and_reopen_are_audited_with_before_and_after(
    client: Any, acme: dict[str, str], sql: Any
) -> None:
    seed_run(client, acme["agent"], tenant="acme", project="p1", run="r1", phase="design")
    seed_run(client, acme["agent"], tenant="acme", project="p1", run="r2", phase="build")
    admin = bearer(acme["admin"])
    assert (
        client.post("/v1/tenants/acme/pause", json={}, headers=admin).get_json()["fields"][0][
            "field"
        ]
        == "reason"
    )
    r = client.post("/v1/tenants/acme/pause", json={"reason": "card declined"}, headers=admin)
    assert r.status_code == 200 and r.get_json()["after"]["status"] == "paused"
    again = client.post("/v1/tenants/acme/pause", json={"reason": "again"}, headers=admin)
    assert again.status_code == 409 and "already paused" in again.get_json()["error"]
    r = client.post("/v1/tenants/acme/resume", json={"reason": "paid"}, headers=admin)
    assert r.get_json()["before"]["status"] == "paused"
    assert sql("SELECT current_phase FROM projects WHERE project_id = 'p1'") == [("build",)]
    never = client.post("/v1/projects/p1/reopen", json={"phase": "publish", "reason": "x"},
                        headers=admin)  # fmt: skip
    assert never.status_code == 409 and "never been in phase 'publish'" in never.get_json()["error"]
    r = client.post("/v1/projects/p1/reopen", json={"phase": "design", "reason": "brief changed"},
                    headers=bearer(acme["support"]))  # fmt: skip
    assert r.status_code == 200 and r.get_json()["before"]["current_phase"] == "build"
    assert sql("SELECT current_phase FROM projects WHERE project_id = 'p1'") == [("design",)]
    rows = sql("SELECT actor_role, action, details->'before', details->'after', details->>'reason'"
               " FROM audit_log ORDER BY audit_id")  # fmt: skip
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("admin", "tenant_paused", "card declined"),
        ("admin", "tenant_resumed", "paid"),
        ("support", "phase_reopened", "brief changed"),
    ]
    assert rows[0][2]["status"] == "active" and rows[0][3]["status"] == "paused"
    assert rows[2][3]["current_phase"] == "design"


def test_support_impersonation_is_marked_audited_and_in_the_ledger(
    client: Any, acme: dict[str, str], sql: Any
) -> None:
    seed_run(client, acme["agent"], tenant="acme", project="pa", run="ra")
    csrf = login(client, acme["support"])
    resp = client.post("/impersonate", data={"csrf_token": csrf, "tenant": "acme",
                                             "reason": "ticket 4411"})  # fmt: skip
    assert resp.status_code == 303
    for url in ("/tenants/acme", "/runs/ra", "/export"):
        html = client.get(url).get_data(as_text=True)
        assert 'id="impersonation"' in html and "Impersonating the owner of tenant acme" in html
    assert client.get("/tenants/other").status_code == 404  # acts as acme's owner only
    assert client.post("/impersonate/end", data={"csrf_token": csrf}).status_code == 303
    assert 'id="impersonation"' not in client.get("/admin").get_data(as_text=True)
    assert sql("SELECT action, tenant_id, details->>'reason' FROM audit_log"
               " WHERE action LIKE 'impersonation%%' ORDER BY audit_id") == [
        ("impersonation_started", "acme", "ticket 4411"),
        ("impersonation_ended", "acme", "ticket 4411"),
    ]  # fmt: skip
    events = sql("SELECT type, payload->>'actor' FROM events WHERE project_id = 'console'"
                 " ORDER BY seq")  # fmt: skip
    assert events == [("run_started", None), ("impersonation_started", "test-support"),
                      ("impersonation_ended", "test-support"), ("run_finished", None)]  # fmt: skip


def test_embed_link_is_signed_expiring_and_bound_to_one_tenant(
    client: Any, acme: dict[str, str], app: Any
) -> None:
    seed_run(client, acme["agent"], tenant="acme", project="pa", run="ra")
    resp = client.post("/v1/tenants/acme/embed-links", json={"ttl_minutes": 5},
                       headers=bearer(acme["owner"]))  # fmt: skip
    assert resp.status_code == 201
    url = resp.get_json()["url"]
    path = url[url.index("/embed/") :]
    anonymous = app.test_client()
    page = anonymous.get(path)
    assert page.status_code == 200 and "acme" in page.get_data(as_text=True)
    assert "frame-ancestors *" in page.headers["Content-Security-Policy"]
    assert 'name="csrf_token"' not in page.get_data(as_text=True)  # read-only

    import base64
    import json

    signed = path.removeprefix("/embed/")
    body, _, sig = signed.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["t"] = "other"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    refused = anonymous.get(f"/embed/{forged}.{sig}")
    assert refused.status_code == 403 and "edited" in refused.get_data(as_text=True)

    from runledger.control import _embed

    with app.app_context():
        old, _ = _embed.mint("acme", 60, now=datetime.now(UTC).timestamp() - 3600)
    expired = anonymous.get(f"/embed/{old}")
    assert expired.status_code == 403 and "expired" in expired.get_data(as_text=True)
    other = client.post("/v1/tenants/other/embed-links", json={}, headers=bearer(acme["owner"]))
    assert other.status_code == 403


def test_admin_raises_cap_from_the_page(client: Any, acme: dict[str, str], sql: Any) -> None:
    csrf = login(client, acme["admin"])
    resp = client.post("/tenants/acme/raise-cap", data={
        "csrf_token": csrf, "new_cap_usd": "250", "reason": "launch week"})  # fmt: skip
    assert resp.status_code == 303
    page = client.get("/tenants/acme").get_data(as_text=True)
    assert "$250.00" in _table(page, "cap-changes") and "launch week" in _table(page, "audit")
    assert sql("SELECT daily_cap_usd FROM tenants WHERE tenant_id = 'acme'") == [(Decimal(250),)]
    missing = client.post("/tenants/acme/raise-cap", data={"csrf_token": csrf, "new_cap_usd": "9"})
    assert missing.status_code == 400 and "reason" in missing.get_data(as_text=True)
    assert csrf_of(client) == csrf
