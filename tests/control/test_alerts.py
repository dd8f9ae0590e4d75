"""The alerts API against real components: PostgreSQL, Alertmanager (silences), an aiosmtpd
SMTP server and a local HTTP stand-in for Slack."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from _support.alerting import Alertmanager, SlackStandIn, SmtpSink, am_alert, am_payload, wait_until
from runledger.alertmanager_config import local_alertmanager_config
from runledger.cli import main
from runledger.control import create_app
from runledger.control._delivery import RetryPolicy, SmtpSettings
from runledger.exporter._collector import LedgerCollector
from runledger.exporter._config import ExporterConfig
from runledger.store import Database

pytestmark = pytest.mark.timeout(120)

SECRET = "webhook-secret-for-tests"
HOOK = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    from _support import ROOT

    work = tmp_path_factory.mktemp("am")
    token = work / "token"
    token.write_text(SECRET)
    config = local_alertmanager_config(
        ROOT, work, control_url="http://127.0.0.1:9", token_file=token
    )
    am = Alertmanager(config, work)
    yield am
    am.stop()


@pytest.fixture
def alert_app(
    db: Database, smtp: SmtpSink, alertmanager: Alertmanager, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.setenv("RUNLEDGER_ALLOW_HTTP_WEBHOOKS", "1")  # the Slack stand-in is http
    app = create_app({
        "DATABASE": db, "TESTING": True, "ALERT_WEBHOOK_TOKEN": SECRET,
        "SMTP": SmtpSettings("127.0.0.1", smtp.port, sender="alerts@runledger.example"),
        "ALERT_RETRY": RetryPolicy(attempts=3, first_wait_s=0.01, max_wait_s=0.05),
        "ALERTMANAGER_URL": alertmanager.url,
    })  # fmt: skip
    yield app
    notifier = app.extensions.get("runledger.notifier")
    if notifier is not None:
        notifier.close()


@pytest.fixture
def api(alert_app: Any) -> Any:
    return alert_app.test_client()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _settings(api: Any, tenant: str, token: str, **body: Any) -> Any:
    return api.put(f"/v1/tenants/{tenant}/notifications", json=body, headers=_auth(token))


def _metric(api: Any, name: str) -> float:
    text = api.get("/metrics").get_data(as_text=True)
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


# -- the webhook --------------------------------------------------------------------------------


def test_the_webhook_wants_the_shared_secret(db: Database) -> None:
    off = create_app({"DATABASE": db, "TESTING": True}).test_client()
    resp = off.post("/v1/alerts/webhook", json=am_payload(am_alert("LedgerDown")))
    assert resp.status_code == 503
    assert "RUNLEDGER_ALERT_WEBHOOK_TOKEN" in resp.json["error"]

    on = create_app({"DATABASE": db, "TESTING": True, "ALERT_WEBHOOK_TOKEN": SECRET})
    client = on.test_client()
    payload = am_payload(am_alert("LedgerDown", audience="admin", severity="critical"))
    assert client.post("/v1/alerts/webhook", json=payload).status_code == 401
    wrong = client.post("/v1/alerts/webhook", json=payload, headers=_auth("not-it"))
    assert wrong.status_code == 401 and wrong.json["error"] == "invalid webhook token"
    assert client.post("/v1/alerts/webhook", json=payload, headers=HOOK).status_code == 200


def test_a_malformed_notification_is_a_400_naming_the_field(api: Any) -> None:
    bad = am_payload(am_alert("LedgerDown", audience="admin"))
    bad["alerts"][0]["startsAt"] = "yesterday"
    resp = api.post("/v1/alerts/webhook", json=bad, headers=HOOK)
    assert resp.status_code == 400
    assert resp.json["fields"][0]["field"] == "alerts[0].startsAt"
    # A time PostgreSQL cannot store (past year 9999 in UTC) is refused, not a 500.
    bad["alerts"][0]["startsAt"] = "9999-12-31T23:59:59-01:00"
    resp = api.post("/v1/alerts/webhook", json=bad, headers=HOOK)
    assert resp.status_code == 400 and resp.json["fields"][0]["field"] == "alerts[0].startsAt"
    resp = api.post("/v1/alerts/webhook", json={**bad, "version": "3"}, headers=HOOK)
    assert resp.status_code == 400 and resp.json["fields"][0]["field"] == "version"


def test_owner_banners_reach_only_their_tenant_and_admins_see_admin_banners(
    api: Any, make_tenant: Callable[..., str], make_token: Callable[..., str], smtp: SmtpSink
) -> None:
    make_tenant("acme")
    make_tenant("globex")
    acme, globex, admin = (
        make_token("owner", "acme"),
        make_token("owner", "globex"),
        make_token("admin"),
    )
    near = am_alert("TenantDailyCapNearlyReached", fingerprint="aa01", tenant="acme",
                    audience="owner", severity="warning")  # fmt: skip
    down = am_alert("LedgerDown", fingerprint="bb02", audience="admin", severity="critical")
    resp = api.post("/v1/alerts/webhook", json=am_payload(near, down), headers=HOOK)
    assert resp.status_code == 200 and resp.json["opened"] == 2

    mine = api.get("/v1/banners", headers=_auth(acme)).json["banners"]
    assert [(b["alertname"], b["tenant_id"]) for b in mine] == [
        ("TenantDailyCapNearlyReached", "acme")
    ]
    assert mine[0]["runbook_url"] == "docs/runbook.md#tenantdailycapnearlyreached"
    assert api.get("/v1/banners", headers=_auth(globex)).json["banners"] == []
    peek = api.get("/v1/banners?tenant=acme", headers=_auth(globex))
    assert peek.status_code == 403
    admins = api.get("/v1/banners", headers=_auth(admin)).json["banners"]
    assert [b["alertname"] for b in admins] == ["LedgerDown"]
    assert api.get("/v1/banners", headers=_auth(make_token("agent", "acme"))).status_code == 403

    # Alertmanager re-sends the group: still one banner.
    again = api.post("/v1/alerts/webhook", json=am_payload(near), headers=HOOK)
    assert again.json["opened"] == 0
    assert len(api.get("/v1/banners", headers=_auth(acme)).json["banners"]) == 1

    resolved = {**near, "status": "resolved"}
    assert (
        api.post("/v1/alerts/webhook", json=am_payload(resolved), headers=HOOK).json["resolved"]
        == 1
    )
    assert api.get("/v1/banners", headers=_auth(acme)).json["banners"] == []


def test_owner_alerts_are_emailed_to_the_owners_and_sent_to_slack_only_when_opted_in(
    api: Any,
    make_tenant: Callable[..., str],
    make_token: Callable[..., str],
    smtp: SmtpSink,
    slack: SlackStandIn,
    sql: Callable[..., list[tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNLEDGER_GRAFANA_URL", "https://grafana.example/")
    for tenant in ("acme", "globex"):
        make_tenant(tenant)
    admin = make_token("admin")
    assert (
        _settings(
            api,
            "acme",
            admin,
            owner_emails=["owner@acme.example"],
            slack_webhook_url=f"{slack.url}/acme",
            slack_opt_in=True,
        ).status_code
        == 200
    )
    # globex has a webhook on file but did not opt in.
    assert _settings(api, "globex", admin, owner_emails=["owner@globex.example"],
                     slack_webhook_url=f"{slack.url}/globex").status_code == 200  # fmt: skip
    alerts = [
        am_alert("PhaseStalled", fingerprint=f"cc0{i}", tenant=t, phase="build",
                 audience="owner", severity="warning")
        for i, t in enumerate(("acme", "globex"))
    ]  # fmt: skip
    resp = api.post("/v1/alerts/webhook", json=am_payload(*alerts), headers=HOOK)
    assert resp.json["notified"] == 2
    mail = wait_until(lambda: smtp.to("owner@acme.example"), 30, "email to acme's owner")
    assert mail[0]["Subject"] == "[runledger] PhaseStalled summary. (acme)"
    text = mail[0].get_payload()
    assert "Runbook: docs/runbook.md#phasestalled" in text
    assert "Dashboard: https://grafana.example/d/runledger-admin" in text
    wait_until(lambda: smtp.to("owner@globex.example"), 30, "email to globex's owner")
    posts = wait_until(lambda: slack.received("/acme"), 30, "Slack post for acme")
    assert "PhaseStalled summary." in posts[0]["text"]
    assert slack.received("/globex") == []
    # Re-sent by Alertmanager (group_interval): nobody is mailed twice.
    api.post("/v1/alerts/webhook", json=am_payload(*alerts), headers=HOOK)
    wait_until(
        lambda: len(sql("SELECT 1 FROM alert_deliveries")) == 3, 30, "three deliveries recorded"
    )
    assert len(smtp.to("owner@acme.example")) == 1 and len(slack.received("/acme")) == 1


def test_a_failing_slack_webhook_is_retried_then_counted(
    api: Any,
    make_tenant: Callable[..., str],
    make_token: Callable[..., str],
    slack: SlackStandIn,
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:
    make_tenant("umbrella")
    owner = make_token("owner", "umbrella")
    slack.fail.add("/umbrella")
    assert _settings(api, "umbrella", owner, slack_webhook_url=f"{slack.url}/umbrella",
                     slack_opt_in=True).status_code == 200  # fmt: skip
    before = _metric(api, "runledger_control_webhook_failures_total")
    alert = am_alert("ProofOverdue", fingerprint="dd01", tenant="umbrella", audience="owner")
    api.post("/v1/alerts/webhook", json=am_payload(alert), headers=HOOK)
    wait_until(
        lambda: _metric(api, "runledger_control_webhook_failures_total") == before + 1,
        30, "the failed delivery counted",
    )  # fmt: skip
    assert len(slack.received("/umbrella")) == 3  # RetryPolicy(attempts=3)
    rows = sql("SELECT channel, status, attempts, error FROM alert_deliveries")
    assert rows == [("slack", "failed", 3, "Slack answered 500")]
    shown = api.get("/v1/tenants/umbrella/notifications", headers=_auth(owner)).json
    assert shown["recent_deliveries"][0]["status"] == "failed"
    # The webhook URL is a secret: shown masked, never stored in an error.
    assert shown["slack_webhook_url"] == f"{slack.url}/…"


def test_a_refused_email_is_retried_then_counted(
    api: Any, make_tenant: Callable[..., str], make_token: Callable[..., str],
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:  # fmt: skip
    make_tenant("acme")
    _settings(api, "acme", make_token("owner", "acme"), owner_emails=["refused@acme.example"])
    before = _metric(api, "runledger_control_webhook_failures_total")
    alert = am_alert("ProofOverdue", fingerprint="dd02", tenant="acme", audience="owner")
    api.post("/v1/alerts/webhook", json=am_payload(alert), headers=HOOK)
    wait_until(
        lambda: _metric(api, "runledger_control_webhook_failures_total") == before + 1,
        30, "the refused email counted",
    )  # fmt: skip
    rows = sql("SELECT channel, status, attempts, error FROM alert_deliveries")
    assert rows == [("email", "failed", 3, "SMTP SMTPRecipientsRefused")]
    assert "refused@" not in str(rows)


def test_owners_manage_their_own_settings_only_and_bad_values_name_the_field(
    api: Any, make_tenant: Callable[..., str], make_token: Callable[..., str],
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:  # fmt: skip
    make_tenant("acme")
    make_tenant("globex")
    owner = make_token("owner", "acme")
    assert _settings(api, "globex", owner, owner_emails=["x@y.example"]).status_code == 403
    bad = _settings(api, "acme", owner, owner_emails=["not-an-address"])
    assert bad.status_code == 400 and bad.json["fields"][0]["field"] == "owner_emails[0]"
    plain = _settings(api, "acme", owner, slack_webhook_url="http://10.0.0.5/hook")
    assert plain.status_code == 200  # allowed here: RUNLEDGER_ALLOW_HTTP_WEBHOOKS=1
    no_url = _settings(api, "acme", owner, slack_opt_in=True)
    assert no_url.status_code == 400
    assert no_url.json["fields"] == [
        {"field": "slack_webhook_url", "message": "is required when slack_opt_in is true"}
    ]
    assert _settings(api, "acme", owner, owner_emails=["o@acme.example"]).status_code == 200
    audit = sql("SELECT actor_role, action, details FROM audit_log")
    details = {"owner_emails": 1, "slack_webhook": False, "slack_opt_in": False}
    assert audit[-1] == ("owner", "tenant.notifications", details)
    assert len(audit) == 2  # one row per accepted change; refusals change nothing
    assert "o@acme.example" not in str(audit)


def test_slack_webhooks_must_be_https(
    api: Any, make_tenant: Callable[..., str], make_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The control service posts to the URL: plain http could reach its own network."""
    monkeypatch.delenv("RUNLEDGER_ALLOW_HTTP_WEBHOOKS")
    make_tenant("acme")
    owner = make_token("owner", "acme")
    plain = _settings(api, "acme", owner, slack_webhook_url="http://10.0.0.5/hook")
    assert plain.status_code == 400
    assert plain.json["fields"][0]["field"] == "slack_webhook_url"
    assert "https://" in plain.json["fields"][0]["message"]
    good = _settings(api, "acme", owner, slack_webhook_url="https://hooks.example/T/B/x")
    assert good.status_code == 200


def test_the_cli_sets_notification_settings(
    db_url: str, make_tenant: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tenant("acme")
    monkeypatch.setenv("RUNLEDGER_DATABASE_URL", db_url)
    runner = CliRunner()
    done = runner.invoke(main, ["tenant", "notify", "acme", "--email", "a@acme.example",
                                "--email", "b@acme.example", "--slack-webhook-url",
                                "https://hooks.example.test/T1/B2/secret", "--slack"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "2 owner address(es), Slack on" in done.output
    shown = runner.invoke(main, ["tenant", "notify", "acme", "--show"])
    assert "a@acme.example, b@acme.example" in shown.output
    assert "secret" not in shown.output and "https://hooks.example.test/…" in shown.output
    bad = runner.invoke(main, ["tenant", "notify", "acme", "--email", "nope"])
    assert bad.exit_code == 2 and "owner_emails[0]" in bad.output


# -- the immediate notice of a refused lease ----------------------------------------------------


def test_a_lease_refused_by_the_daily_cap_shows_the_banner_and_mails_the_owner_at_once(
    api: Any, make_tenant: Callable[..., str], make_token: Callable[..., str], smtp: SmtpSink
) -> None:
    make_tenant("initech", "1")
    agent, owner = make_token("agent", "initech"), make_token("owner", "initech")
    _settings(api, "initech", owner, owner_emails=["owner@initech.example"])
    lease = {"tenant_id": "initech", "holder": "run-1", "min_usd": "0.5"}
    assert api.post("/v1/caps/leases", json=lease, headers=_auth(agent)).status_code == 201
    lease = {**lease, "min_usd": "1.5"}  # more than the whole $1 cap
    refused = api.post("/v1/caps/leases", json={**lease, "holder": "run-2"}, headers=_auth(agent))
    assert refused.status_code == 402
    banners = api.get("/v1/banners", headers=_auth(owner)).json["banners"]
    assert [(b["source"], b["severity"], b["alertname"]) for b in banners] == [
        ("cap_block", "critical", "TenantDailyCapReached")
    ]
    assert "daily cap reached" in banners[0]["body"]
    mail = wait_until(lambda: smtp.to("owner@initech.example"), 30, "the cap email")
    assert mail[0]["Subject"] == "[runledger] Daily cap reached (initech)"
    # More refusals, then the Prometheus alert on the same cap: one banner, one email.
    api.post("/v1/caps/leases", json={**lease, "holder": "run-3"}, headers=_auth(agent))
    alert = am_alert("TenantDailyCapReached", fingerprint="ee01", tenant="initech",
                     audience="owner", severity="critical")  # fmt: skip
    assert api.post("/v1/alerts/webhook", json=am_payload(alert), headers=HOOK).json == {
        "opened": 0, "resolved": 0, "ignored": 0, "notified": 0}  # fmt: skip
    assert len(api.get("/v1/banners", headers=_auth(owner)).json["banners"]) == 1
    # A raise clears it.
    admin = make_token("admin")
    raised = api.post("/v1/caps/initech/raises", json={"new_cap_usd": "5", "reason": "launch day"},
                      headers=_auth(admin))  # fmt: skip
    assert raised.status_code == 201
    assert api.get("/v1/banners", headers=_auth(owner)).json["banners"] == []
    assert len(smtp.to("owner@initech.example")) == 1


# -- muting -------------------------------------------------------------------------------------


def test_muting_is_a_real_alertmanager_silence_audited_listed_and_removable(
    api: Any,
    make_tenant: Callable[..., str],
    make_token: Callable[..., str],
    alertmanager: Alertmanager,
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:
    make_tenant("acme")
    make_tenant("globex")
    owner, other, admin = (
        make_token("owner", "acme"),
        make_token("owner", "globex"),
        make_token("admin"),
    )
    body = {"tenant": "acme", "duration_minutes": 120, "reason": "noisy during the migration"}
    created = api.post("/v1/alerts/silences", json=body, headers=_auth(owner))
    assert created.status_code == 201, created.json
    silence_id = created.json["silence_id"]
    held = alertmanager.silence(silence_id)
    assert held["status"]["state"] == "active"
    assert {(m["name"], m["value"], m["isEqual"]) for m in held["matchers"]} == {
        ("tenant", "acme", True), ("audience", "owner", True)}  # fmt: skip
    assert held["comment"] == "noisy during the migration"

    one = api.post("/v1/alerts/silences", json={**body, "alertname": "ModelErrorSpike"},
                   headers=_auth(owner))  # fmt: skip
    assert one.status_code == 400 and one.json["fields"][0]["field"] == "alertname"
    both = api.post("/v1/alerts/silences", json={**body, "ends_at": "2099-01-01T00:00:00Z"},
                    headers=_auth(owner))  # fmt: skip
    assert both.status_code == 400 and both.json["fields"][0]["field"] == "duration_minutes"
    assert api.post("/v1/alerts/silences", json=body, headers=_auth(other)).status_code == 403
    by_admin = api.post(
        "/v1/alerts/silences",
        json={"tenant": "globex", "alertname": "RunCostHigh", "ends_at": "2099-01-01T00:00:00Z",
              "reason": "known expensive experiment"},
        headers=_auth(admin),
    )  # fmt: skip
    assert by_admin.status_code == 201
    matchers = alertmanager.silence(by_admin.json["silence_id"])["matchers"]
    assert {m["name"]: m["value"] for m in matchers} == {"tenant": "globex",
                                                         "alertname": "RunCostHigh"}  # fmt: skip

    listed = api.get("/v1/alerts/silences", headers=_auth(owner)).json["silences"]
    assert [s["silence_id"] for s in listed] == [silence_id]
    everyone = api.get("/v1/alerts/silences", headers=_auth(admin)).json["silences"]
    assert len(everyone) == 2
    assert api.delete(f"/v1/alerts/silences/{silence_id}", headers=_auth(other)).status_code == 404
    removed = api.delete(f"/v1/alerts/silences/{silence_id}", headers=_auth(owner))
    assert removed.status_code == 200
    assert alertmanager.silence(silence_id)["status"]["state"] == "expired"
    assert api.delete(f"/v1/alerts/silences/{silence_id}", headers=_auth(owner)).status_code == 409
    assert api.get("/v1/alerts/silences", headers=_auth(owner)).json["silences"] == []
    actions = sql("SELECT actor_role, action, tenant_id, target FROM audit_log ORDER BY audit_id")
    assert actions == [("owner", "alert.mute", "acme", silence_id),
                       ("admin", "alert.mute", "globex", by_admin.json["silence_id"]),
                       ("owner", "alert.unmute", "acme", silence_id)]  # fmt: skip


def test_muting_without_alertmanager_says_what_to_configure(
    db: Database, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    client = create_app({"DATABASE": db, "TESTING": True}).test_client()
    resp = client.post("/v1/alerts/silences", headers=_auth(make_token("admin")),
                       json={"tenant": "acme", "duration_minutes": 5, "reason": "r"})  # fmt: skip
    assert resp.status_code == 503 and "RUNLEDGER_ALERTMANAGER_URL" in resp.json["error"]


def test_a_muted_tenant_gets_no_notice_of_a_refused_lease(
    api: Any, make_tenant: Callable[..., str], make_token: Callable[..., str],
    smtp: SmtpSink,
) -> None:  # fmt: skip
    make_tenant("hooli", "1")
    agent, owner = make_token("agent", "hooli"), make_token("owner", "hooli")
    _settings(api, "hooli", owner, owner_emails=["owner@hooli.example"])
    mute = {"tenant": "hooli", "duration_minutes": 60, "reason": "we know, raise pending"}
    assert api.post("/v1/alerts/silences", json=mute, headers=_auth(owner)).status_code == 201
    lease = {"tenant_id": "hooli", "holder": "run-1", "min_usd": "2"}
    assert api.post("/v1/caps/leases", json=lease, headers=_auth(agent)).status_code == 402
    assert api.get("/v1/banners", headers=_auth(owner)).json["banners"] == []
    assert smtp.to("owner@hooli.example") == []


# -- judged alerts ------------------------------------------------------------------------------


def test_admins_judge_fired_alerts_and_precision_is_exported_per_alert(
    api: Any, db: Database, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    admin = make_token("admin")
    fired = [
        am_alert("PhaseStalled", fingerprint="f1", tenant="acme", phase="build", audience="owner"),
        am_alert("ModelErrorSpike", fingerprint="f2", model="gpt-a", audience="admin"),
        am_alert("ModelErrorSpike", fingerprint="f3", model="gpt-b", audience="admin"),
    ]
    api.post("/v1/alerts/webhook", json=am_payload(*fired), headers=HOOK)
    start = "2026-01-05T10:00:00Z"

    def judge(fp: str, name: str, outcome: str) -> Any:
        body = {"fingerprint": fp, "alertname": name, "started_at": start, "outcome": outcome,
                "note": "checked the run"}  # fmt: skip
        return api.post("/v1/alerts/outcomes", json=body, headers=_auth(admin))

    assert judge("f1", "PhaseStalled", "true_positive").status_code == 201
    assert judge("f2", "ModelErrorSpike", "true_positive").status_code == 201
    assert judge("f3", "ModelErrorSpike", "false_positive").status_code == 201
    again = judge("f1", "PhaseStalled", "false_positive")
    assert again.status_code == 409 and "judged already" in again.json["error"]
    unknown = judge("f9", "PhaseStalled", "true_positive")
    assert unknown.status_code == 404 and unknown.json["fields"][0]["field"] == "fingerprint"
    bad = judge("f1", "PhaseStalled", "maybe")
    assert bad.status_code == 400 and bad.json["fields"][0]["field"] == "outcome"
    owner = make_token("owner", "acme")
    body = {"fingerprint": "f1", "alertname": "PhaseStalled", "started_at": start,
            "outcome": "true_positive"}  # fmt: skip
    assert api.post("/v1/alerts/outcomes", json=body, headers=_auth(owner)).status_code == 403

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    LedgerCollector(db, config=ExporterConfig(), registry=registry).refresh()
    text = generate_latest(registry).decode()
    for labels, value in [
        ('alertname="ModelErrorSpike",status="true_positive"', 1.0),
        ('alertname="ModelErrorSpike",status="false_positive"', 1.0),
        ('alertname="PhaseStalled",status="true_positive"', 1.0),
        ('alertname="PhaseStalled",status="false_positive"', 0.0),
    ]:
        assert f"runledger_alert_judgements_total{{{labels}}} {value}" in text


def test_every_route_wants_a_token(api: Any, tmp_path: Path) -> None:
    for method, path in [("get", "/v1/banners"), ("get", "/v1/alerts/silences"),
                         ("post", "/v1/alerts/silences"), ("delete", "/v1/alerts/silences/x"),
                         ("post", "/v1/alerts/outcomes"),
                         ("get", "/v1/tenants/acme/notifications"),
                         ("put", "/v1/tenants/acme/notifications")]:  # fmt: skip
        assert getattr(api, method)(path).status_code == 401, path
