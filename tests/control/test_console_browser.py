"""The console in headless Chromium against the real control service (gunicorn).

Takes a screenshot of each page: into docs/img/ (the README's) with
RUNLEDGER_UPDATE_SCREENSHOTS=1, else into the test's temporary folder, so a test run leaves
the checkout unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from _support import ROOT, ControlService
from _support.alerting import (
    Alertmanager,
    am_payload,
    rule_alert,
    start_alertmanager,
    wait_until,
)
from _support.browser import chromium
from _support.console import bearer, seed_run
from runledger.control import _embed, create_app
from runledger.cost import TenantPaused
from runledger.sdk import Ledger
from runledger.store.quality import freeze_publisher


@pytest.fixture
def img(tmp_path: Path) -> Path:
    """Where screenshots go: docs/img/ when asked to update them, else a temporary folder."""
    return (
        ROOT / "docs" / "img" if os.environ.get("RUNLEDGER_UPDATE_SCREENSHOTS") == "1" else tmp_path
    )


class _Api:
    """A requests client of the live service, for seeding through the ingest API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, path: str, json: Any, headers: dict[str, str]) -> Any:
        resp = requests.post(self.base + path, json=json, headers=headers, timeout=10)
        resp.get_json = resp.json  # type: ignore[attr-defined]
        return resp


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


WEBHOOK_SECRET = "browser-test-webhook-secret"


@pytest.fixture
def hooked_control(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlService]:
    """A started control service whose Alertmanager webhook takes ``WEBHOOK_SECRET``."""
    monkeypatch.setenv("RUNLEDGER_ALERT_WEBHOOK_TOKEN", WEBHOOK_SECRET)
    service = ControlService(db_url)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def world(hooked_control: ControlService, make_tenant: Callable[..., str],
          make_token: Callable[..., str]) -> dict[str, Any]:  # fmt: skip
    base = hooked_control.url
    make_tenant("acme", "20")
    make_tenant("other", "20")
    tokens = {
        "admin": make_token("admin"), "agent": make_token("agent", "acme"),
        "other_agent": make_token("agent", "other"), "owner": make_token("owner", "acme"),
    }  # fmt: skip
    api = _Api(base)
    for i, (model, cost) in enumerate([("gpt-4.1", "4.25"), ("claude-sonnet-4", "9.5"),
                                       ("gpt-4.1", "3.1")]):  # fmt: skip
        fail = "lint: missing alt text" if i == 2 else None
        seed_run(api, tokens["agent"], tenant="acme", project="site-42", run=f"run-{i}",
                 model=model, cost=cost, fail=fail)  # fmt: skip
    seed_run(api, tokens["other_agent"], tenant="other", project="other-site", run="run-o",
             cost="1.75")  # fmt: skip
    # Alertmanager's webhook notification, over HTTP with the shared secret: acme's owners
    # are warned ($16.85 of $20), other's cap is reached, and the admins' alert deliveries fail.
    hook = requests.post(base + "/v1/alerts/webhook", json=am_payload(
        rule_alert("TenantDailyCapNearlyReached", value=16.85 / 20, tenant="acme"),
        rule_alert("TenantDailyCapReached", tenant="other"),
        rule_alert("AlertDeliveryFailing", value=3),
    ), headers=bearer(WEBHOOK_SECRET), timeout=10)  # fmt: skip
    assert hook.status_code == 200 and hook.json()["opened"] == 3, hook.text
    return {"url": base, "tokens": tokens}


ACME_NEAR = "Tenant acme has spent 84.25% of today's daily cap."
OTHER_REACHED = "Tenant other reached its daily cap"
DELIVERY_FAILING = "3 alert notifications (email, Slack or webhook) failed"


def _login(page: Any, base: str, token: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_admin_raises_a_cap_and_pauses_a_tenant(
    browser: Any, world: dict[str, Any], make_ledger: Callable[..., Ledger], sql: Any, img: Path
) -> None:
    base = world["url"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(base + "/login")
    page.screenshot(path=str(img / "console-login.png"))
    _login(page, base, world["tokens"]["admin"])
    assert page.url == base + "/admin"
    assert DELIVERY_FAILING in page.inner_text("#banners")
    assert ACME_NEAR not in page.inner_text("#banners")
    assert OTHER_REACHED not in page.inner_text("#banners")
    assert page.inner_text("#spend-total") == "$18.60"  # acme $16.85 and other $1.75
    assert "acme" in page.inner_text("#caps-near")  # $16.85 of $20 is past 80%
    page.screenshot(path=str(img / "console-admin.png"), full_page=True)

    page.click("#spend-by-tenant >> text=acme")
    page.fill("#raise-cap-form input[name=new_cap_usd]", "50")
    page.fill("#raise-cap-form input[name=reason]", "launch week traffic")
    page.click("#raise-cap-form button")
    page.wait_for_load_state()
    assert "Done: cap raised" in page.inner_text("main")
    assert page.inner_text("#cap-in-force") == "$50.00"
    changes = page.inner_text("#cap-changes")
    assert "$20.00" in changes and "$50.00" in changes and "launch week traffic" in changes
    audit = page.inner_text("#audit")
    assert "cap_change" in audit and "launch week traffic" in audit and "test-admin" in audit

    page.fill("#pause-form input[name=reason]", "card declined")
    page.click("#pause-form button")
    page.wait_for_load_state()
    assert page.inner_text("#tenant-status") == "paused"
    assert "tenant_paused" in page.inner_text("#audit")
    page.screenshot(path=str(img / "console-tenant.png"), full_page=True)

    ledger = make_ledger(base, world["tokens"]["agent"])
    with pytest.raises(TenantPaused, match="paused by an admin: no new runs"):
        ledger.start_run("acme", "site-42", "build", "implementer")

    page.goto(base + "/projects/site-42")
    reasons = page.locator("[data-reason]").evaluate_all("els => els.map(e => e.dataset.reason)")
    assert "tenant_paused" in reasons and "card declined" in page.inner_text("#why-blocked ~ div")
    page.screenshot(path=str(img / "console-project.png"), full_page=True)
    page.goto(base + "/runs/run-2")
    assert "lint: missing alt text" in page.inner_text("#errors")
    page.screenshot(path=str(img / "console-run.png"), full_page=True)
    page.goto(base + "/export")
    page.screenshot(path=str(img / "console-export.png"))

    # A form post without the CSRF token is refused, with the session cookie sent.
    refused = ctx.request.post(base + "/tenants/acme/resume", form={"reason": "no csrf"})
    assert refused.status == 400 and "CSRF token is missing or wrong" in refused.text()
    assert sql("SELECT status FROM tenants WHERE tenant_id = 'acme'") == [("paused",)]
    ctx.close()


def test_owner_sees_only_their_tenant_and_embed_links_are_tamper_proof(
    browser: Any, world: dict[str, Any], db: Any, img: Path
) -> None:
    base = world["url"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    _login(page, base, world["tokens"]["owner"])
    assert page.url == base + "/tenants/acme"
    banners = page.inner_text("#banners")
    assert ACME_NEAR in banners
    assert OTHER_REACHED not in banners and DELIVERY_FAILING not in banners
    assert "run-o" not in page.inner_text("main") and "100 / 40" not in page.inner_text("main")
    page.screenshot(path=str(img / "console-owner.png"), full_page=True)
    assert page.goto(base + "/tenants/other").status == 404
    assert page.goto(base + "/runs/run-o").status == 404
    assert page.goto(base + "/admin").status == 403

    page.goto(base + "/tenants/acme")
    page.click("text=Create embed link")
    url = page.inner_text("#embed-url")
    assert url.startswith(base + "/embed/")
    anonymous = browser.new_context()
    embed = anonymous.new_page()
    assert embed.goto(url).status == 200
    assert "acme" in embed.inner_text("h1") and ACME_NEAR in embed.inner_text("#banners")
    assert embed.locator("form").count() == 0
    embed.screenshot(path=str(img / "console-embed.png"), full_page=True)

    signed = url.removeprefix(base + "/embed/")
    tampered = signed.replace(signed[5], "A" if signed[5] != "A" else "B", 1)
    resp = embed.goto(f"{base}/embed/{tampered}")
    assert resp.status == 403 and "not valid" in embed.inner_text("#error-message")
    app = create_app({"DATABASE": db})
    with app.app_context():  # the key is the service's, kept in the ledger
        expired, _ = _embed.mint("acme", 60, now=datetime.now(UTC).timestamp() - 7200)
    resp = embed.goto(f"{base}/embed/{expired}")
    assert resp.status == 403 and "expired" in embed.inner_text("#error-message")
    anonymous.close()
    ctx.close()
    assert requests.get(base + "/v1/export/runs.csv", headers=bearer(world["tokens"]["owner"]),
                        timeout=10).text.count("other-site") == 0  # fmt: skip


# -- alerts and quality: mute, judge, unfreeze, with a real Alertmanager -------------------


@pytest.fixture
def alerting(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ControlService, Alertmanager]]:
    """The control service and a real Alertmanager wired both ways: Alertmanager's webhook
    posts to the service, the service mutes through Alertmanager's API."""
    service = ControlService(db_url)
    am = start_alertmanager(
        tmp_path, secret=WEBHOOK_SECRET, control_url=service.url,
        timings={"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
    )  # fmt: skip
    monkeypatch.setenv("RUNLEDGER_ALERTMANAGER_URL", am.url)
    monkeypatch.setenv("RUNLEDGER_ALERT_WEBHOOK_TOKEN", WEBHOOK_SECRET)
    try:
        service.start()
        yield service, am
    finally:
        service.stop()
        am.stop()


def _fire(am: Alertmanager, alertname: str, **labels: str) -> None:
    """Send Alertmanager an alert as Prometheus would."""
    alert = {
        "labels": {"alertname": alertname, "severity": "warning", **labels},
        "annotations": {"summary": f"{alertname} fired", "description": f"{alertname} test",
                        "runbook_url": f"docs/runbook.md#{alertname.lower()}"},
    }  # fmt: skip
    requests.post(am.url + "/api/v2/alerts", json=[alert], timeout=5).raise_for_status()


def test_admin_mutes_judges_and_unfreezes_from_the_pages(
    browser: Any, alerting: tuple[ControlService, Alertmanager], db: Any,
    make_tenant: Callable[..., str], make_token: Callable[..., str], sql: Any, img: Path,
) -> None:  # fmt: skip
    service, am = alerting
    base = service.url
    make_tenant("acme", "20")
    make_tenant("other", "20")
    admin, other_owner = make_token("admin"), make_token("owner", "other")
    seed_run(_Api(base), make_token("agent", "acme"), tenant="acme", project="site-42",
             run="run-1", playbook="landing", cost="2.5")  # fmt: skip
    _fire(am, "ModelErrorSpike", audience="admin", model="gpt-4.1")
    _fire(am, "PhaseStalled", audience="owner", tenant="acme", phase="build")
    wait_until(lambda: sql("SELECT count(*) FROM notifications WHERE source = 'alertmanager'")
               == [(2,)], 30, "Alertmanager's webhook opened both banners")  # fmt: skip

    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    _login(page, base, admin)
    spike = page.locator("[data-banner]", has_text="ModelErrorSpike fired")
    page.screenshot(path=str(img / "console-alerts.png"))
    spike.locator("input[name=note]").fill("a bad deploy, rolled back")
    spike.locator("button", has_text="True positive").click()
    page.wait_for_load_state()
    assert "Done: alert judged true positive" in page.inner_text("main")
    judged = page.locator("[data-banner]", has_text="ModelErrorSpike fired")
    assert "Judged true positive by test-admin: a bad deploy, rolled back" in judged.inner_text()
    assert judged.locator("form").count() == 0
    assert sql("SELECT alertname, audience, outcome, judged_by, note FROM alert_outcomes") == [
        ("ModelErrorSpike", "admin", "true_positive", "test-admin", "a bad deploy, rolled back")
    ]
    assert sql("SELECT actor, details->>'outcome' FROM audit_log WHERE action = 'alert.judge'") == [
        ("test-admin", "true_positive")
    ]

    page.goto(base + "/tenants/acme#muting")
    page.select_option("#mute-form select[name=alertname]", "PhaseStalled")
    page.select_option("#mute-form select[name=duration_minutes]", "240")
    page.fill("#mute-form input[name=reason]", "build phase waits on the client")
    page.click("#mute-form button")
    page.wait_for_load_state()
    assert "Done: PhaseStalled muted until" in page.inner_text("main")
    row = page.locator("#silences [data-silence]")
    assert row.count() == 1 and "build phase waits on the client" in row.inner_text()
    silence_id = row.get_attribute("data-silence")
    assert silence_id
    held = am.silence(silence_id)
    assert held["status"]["state"] == "active" and held["createdBy"] == "test-admin"
    assert {m["name"]: m["value"] for m in held["matchers"]} == {
        "tenant": "acme",
        "alertname": "PhaseStalled",
    }
    wait_until(lambda: am.alerts(alertname="PhaseStalled")[0]["status"]["silencedBy"]
               == [silence_id], 10, "Alertmanager silences the firing alert")  # fmt: skip
    audit = page.inner_text("#audit")
    assert "alert.mute" in audit and "build phase waits on the client" in audit
    top, bottom = page.evaluate(
        "() => [document.getElementById('muting'), document.getElementById('notifications-form')]"
        ".map(e => e.getBoundingClientRect()).map((r, i) => (i ? r.bottom : r.top) + scrollY)"
    )
    clip = {"x": 0, "y": top - 8, "width": 1280, "height": bottom - top + 16}
    page.screenshot(path=str(img / "console-muting.png"), clip=clip, full_page=True)

    # The owner of another tenant cannot mute this one, even with a valid session and CSRF.
    foreign = browser.new_context()
    other = foreign.new_page()
    _login(other, base, other_owner)
    assert other.goto(base + "/tenants/acme").status == 404
    other.goto(base + "/tenants/other")
    csrf = other.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = foreign.request.post(base + "/tenants/acme/silences", form={
        "csrf_token": csrf, "duration_minutes": "60", "reason": "hide acme's alerts"})  # fmt: skip
    assert refused.status == 404
    unmute = foreign.request.post(f"{base}/tenants/acme/silences/{silence_id}/remove",
                                  form={"csrf_token": csrf})  # fmt: skip
    assert unmute.status == 404 and am.silence(silence_id)["status"]["state"] == "active"
    assert sql("SELECT count(*) FROM alert_silences") == [(1,)]
    foreign.close()

    row.locator("button", has_text="Remove").click()
    page.wait_for_load_state()
    assert "Done: mute removed" in page.inner_text("main")
    assert page.locator("#silences [data-silence]").count() == 0
    assert am.silence(silence_id)["status"]["state"] == "expired"
    assert "alert.unmute" in page.inner_text("#audit")

    with db.connection() as conn:  # what the daily quality sample does when it fails
        freeze_publisher(
            conn, playbook="landing", reason="4 of 5 sampled pages failed validation",
            actor="quality-sampler", day=datetime.now(UTC).date(), sampled=5, failed=4,
            failure_rate=0.8, threshold=0.2,
        )  # fmt: skip
    page.goto(base + "/projects/site-42")
    frozen = page.locator("[data-reason=publisher_frozen]")
    assert "4 of 5 sampled pages failed validation" in frozen.inner_text()
    frozen.locator("input[name=reason]").fill("sampler fed stale pages; checked by hand")
    frozen.locator("button", has_text="Unfreeze").click()
    page.wait_for_load_state()
    assert "Done: Publisher of landing unfrozen" in page.inner_text("main")
    assert page.locator("[data-reason=publisher_frozen]").count() == 0
    state = requests.get(base + "/v1/playbooks/landing/freeze", headers=bearer(admin), timeout=10)
    assert state.json()["frozen"] is False
    assert sql(
        "SELECT actor, target, details->>'reason' FROM audit_log"
        " WHERE action = 'publisher.unfreeze'"
    ) == [("test-admin", "landing", "sampler fed stale pages; checked by hand")]
    ctx.close()
