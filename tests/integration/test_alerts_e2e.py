"""Alerts end to end, every process real and on loopback: the exporter, Prometheus with the
project's recording and alert rules, Alertmanager with the shipped routes, the control
service (gunicorn), an aiosmtpd SMTP server and a Slack stand-in.

Only timings are shortened (docs/alerts.md, "Testing it end to end"): 1 s scrape and
evaluation, every `for:` rendered as 1 s (`runledger alerts render --for 1s`), Alertmanager
group_wait and group_interval 1 s. Thresholds, routes, grouping and inhibition are the
shipped ones.

Tenants, each with a $1 daily cap and an owner address:
- acme: Slack opted in. Pushed past 80 % then 100 %.
- globex: a Slack webhook on file but not opted in. Pushed past 80 %.
- initech: Slack opted in, but its owner muted all its owner alerts. Pushed past 100 %.
- umbrella: opted in to a Slack webhook that answers 500. Pushed past 80 %.
- hooli: untouched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml

from _support import ROOT, event, free_port, stop_process
from _support.alerting import Alertmanager, SlackStandIn, SmtpSink, wait_until
from _support.exporter import (
    PROM_DIR,
    Prometheus,
    start_control,
    start_exporter,
    start_prometheus,
    write_prometheus_config,
)
from runledger.alert_rules import render_files
from runledger.alertmanager_config import local_alertmanager_config
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

pytestmark = pytest.mark.timeout(150)

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
ONCALL = "oncall@ops.example"
TOKEN = "e2e-webhook-secret"
NEAR, REACHED = "TenantDailyCapNearlyReached", "TenantDailyCapReached"


@dataclass
class Stack:
    control: str
    am: Alertmanager
    prom: Prometheus
    smtp: SmtpSink
    slack: SlackStandIn
    tokens: dict[str, str]

    def banners(self, who: str) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.control}/v1/banners", headers=self.auth(who), timeout=10)
        assert resp.status_code == 200, resp.text
        return list(resp.json()["banners"])

    def alertnames(self, who: str) -> set[str]:
        return {b["alertname"] for b in self.banners(who)}

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def spend(self, tenant: str, usd: str) -> None:
        ev = event("artifact_written", tenant_id=tenant, project_id=f"{tenant}-p",
                   run_id=f"{tenant}-{uuid.uuid4().hex[:8]}", model="gpt-a", tokens_in=1000,
                   tokens_out=100, cost_usd=usd, artifact_path="site/index.html",
                   artifact_version=1)  # fmt: skip
        resp = requests.post(f"{self.control}/v1/events", json={"events": [ev]},
                             headers=self.auth(f"agent:{tenant}"), timeout=10)  # fmt: skip
        assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text

    def failures(self) -> float:
        text = requests.get(f"{self.control}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("runledger_control_webhook_failures_total "):
                return float(line.split()[1])
        return 0.0


def _prometheus_config(workdir: Path, port: int, exporter: str, control: str, am: int) -> Path:
    """The test Prometheus: 1 s intervals, the recording rules, the alert rules with every
    ``for:`` 1 s, alerts sent to the test Alertmanager."""
    path = write_prometheus_config(
        workdir, port, {"runledger-exporter": exporter, "runledger-control": control}, "60s"
    )
    render_files(PROM_DIR / "thresholds.yml", workdir / "alerts", for_override="1s")
    config = yaml.safe_load(path.read_text())
    config["rule_files"].append(str(workdir / "alerts" / "*.yml"))
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am}"]}]}]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(module_db_url: str, module_workdir: Path) -> Iterator[Stack]:
    db_url, work = module_db_url, module_workdir
    tokens: dict[str, str] = {}
    with psycopg.connect(db_url) as conn:
        for tenant in TENANTS:
            create_tenant(conn, tenant, daily_cap_usd=Decimal(1))
            tokens[tenant] = create_token(conn, role="owner", label=f"owner {tenant}",
                                          tenant_id=tenant)  # fmt: skip
            tokens[f"agent:{tenant}"] = create_token(conn, role="agent", label=f"agent {tenant}",
                                                     tenant_id=tenant)  # fmt: skip
        tokens["admin"] = create_token(conn, role="admin", label="admin", tenant_id=None)
    smtp, slack = SmtpSink(), SlackStandIn()
    slack.fail.add("/umbrella")
    procs: list[Any] = []
    am = None
    try:
        (work / "token").write_text(TOKEN)
        control_port = free_port()
        control_url = f"http://127.0.0.1:{control_port}"
        am_config = local_alertmanager_config(
            ROOT, work / "am", control_url=control_url, token_file=work / "token",
            smtp=("127.0.0.1", smtp.port), admin_email=ONCALL,
            timings={"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        )  # fmt: skip
        am = Alertmanager(am_config, work)
        env = {"RUNLEDGER_ALERT_WEBHOOK_TOKEN": TOKEN, "RUNLEDGER_ALERTMANAGER_URL": am.url,
               "RUNLEDGER_SMTP_HOST": "127.0.0.1", "RUNLEDGER_SMTP_PORT": str(smtp.port),
               "RUNLEDGER_SMTP_FROM": "alerts@runledger.example",
               "RUNLEDGER_ALLOW_HTTP_WEBHOOKS": "1"}  # fmt: skip
        control_proc, control = start_control(db_url, work, env=env, port=control_port)
        procs.append(control_proc)
        exporter_proc, exporter = start_exporter(
            db_url, {"poll_interval_seconds": 0.2, "gauge_refresh_seconds": 0.2}, work
        )
        procs.append(exporter_proc)
        prom_port = free_port()
        config = _prometheus_config(
            work, prom_port, exporter.removeprefix("http://"), control.removeprefix("http://"),
            am.port,
        )  # fmt: skip
        prom = start_prometheus(config, work, prom_port)
        procs.append(prom.proc)
        prom.wait_for('up{job="runledger-exporter"}', lambda v: v == 1)
        yield Stack(control, am, prom, smtp, slack, tokens)
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        if am is not None:
            am.stop()
        smtp.close()
        slack.close()


def _settings(stack: Stack, tenant: str, **body: Any) -> None:
    resp = requests.put(f"{stack.control}/v1/tenants/{tenant}/notifications", json=body,
                        headers=stack.auth(tenant), timeout=10)  # fmt: skip
    assert resp.status_code == 200, resp.text


def test_owners_hear_of_their_caps_through_the_whole_chain(stack: Stack) -> None:
    started = time.monotonic()
    slack = stack.slack.url
    _settings(stack, "acme", owner_emails=["owner@acme.example"],
              slack_webhook_url=f"{slack}/acme", slack_opt_in=True)  # fmt: skip
    _settings(stack, "globex", owner_emails=["owner@globex.example"],
              slack_webhook_url=f"{slack}/globex", slack_opt_in=False)  # fmt: skip
    _settings(stack, "initech", owner_emails=["owner@initech.example"],
              slack_webhook_url=f"{slack}/initech", slack_opt_in=True)  # fmt: skip
    _settings(stack, "umbrella", owner_emails=["owner@umbrella.example"],
              slack_webhook_url=f"{slack}/umbrella", slack_opt_in=True)  # fmt: skip
    _settings(stack, "hooli", owner_emails=["owner@hooli.example"])
    mute = requests.post(f"{stack.control}/v1/alerts/silences", headers=stack.auth("initech"),
                         json={"tenant": "initech", "duration_minutes": 60,
                               "reason": "month-end batch, we know"}, timeout=10)  # fmt: skip
    assert mute.status_code == 201, mute.text

    # 80 %: acme, globex, initech, umbrella at $0.85 of $1.
    for tenant in ("acme", "globex", "initech", "umbrella"):
        stack.spend(tenant, "0.85")
    wait_until(lambda: NEAR in stack.alertnames("acme"), 30, "acme's 80% banner")
    wait_until(lambda: NEAR in stack.alertnames("globex"), 10, "globex's 80% banner")
    wait_until(lambda: NEAR in stack.alertnames("umbrella"), 10, "umbrella's 80% banner")
    mail = wait_until(lambda: stack.smtp.to("owner@acme.example"), 10, "acme's 80% email")
    assert "most of today's daily cap" in mail[0]["Subject"]
    posts = wait_until(lambda: stack.slack.received("/acme"), 10, "acme's Slack post")
    assert "Tenant acme has spent 85% of today's daily cap" in posts[0]["text"]
    wait_until(lambda: stack.smtp.to("owner@globex.example"), 10, "globex's 80% email")

    # umbrella's Slack answers 500: retried with backoff, then counted.
    wait_until(lambda: stack.failures() >= 1, 20, "the failed Slack delivery counted")
    assert len(stack.slack.received("/umbrella")) >= 2

    # 100 %: acme past its cap; initech (muted) too.
    stack.spend("acme", "0.20")
    stack.spend("initech", "0.20")
    wait_until(lambda: REACHED in stack.alertnames("acme"), 30, "acme's 100% banner")
    # Its 80 % banner gives way, and Alertmanager inhibits the 80 % alert.
    assert NEAR not in stack.alertnames("acme")
    near = wait_until(
        lambda: [a for a in stack.am.alerts(alertname=NEAR, tenant="acme")
                 if a["status"]["state"] == "suppressed"],
        10, "acme's 80% alert inhibited",
    )  # fmt: skip
    assert near[0]["status"]["inhibitedBy"], near
    wait_until(lambda: len(stack.smtp.to("owner@acme.example")) == 2, 10, "acme's 100% email")
    assert "daily cap is reached" in stack.smtp.to("owner@acme.example")[1]["Subject"]
    wait_until(lambda: len(stack.slack.received("/acme")) == 2, 10, "acme's 100% Slack post")

    # Each owner sees only their tenant; the muted and the untouched tenant get nothing.
    assert all(b["tenant_id"] == "acme" for b in stack.banners("acme"))
    assert REACHED not in stack.alertnames("globex")
    muted = stack.am.alerts(tenant="initech", alertname=REACHED)
    assert muted and muted[0]["status"]["silencedBy"] == [mute.json()["silence_id"]]
    assert stack.banners("initech") == [] and stack.banners("hooli") == []
    assert stack.smtp.to("owner@initech.example") == [] == stack.smtp.to("owner@hooli.example")
    assert stack.slack.received("/initech") == [] and stack.slack.received("/globex") == []

    # The failed delivery pages the admins (AlertDeliveryFailing): admin banner and email.
    wait_until(lambda: "AlertDeliveryFailing" in stack.alertnames("admin"), 30,
               "the admin banner for failed deliveries")  # fmt: skip
    # (acme's events went past its cap without a lease: TenantDailyCapBreached mails on-call too.)
    wait_until(
        lambda: [m for m in stack.smtp.to(ONCALL) if "AlertDeliveryFailing" in m["Subject"]],
        15, "the on-call email about failed deliveries",
    )  # fmt: skip
    # Seconds later, after many 1 s group intervals, the inhibited 80 % has not come back.
    assert NEAR not in stack.alertnames("acme") and REACHED in stack.alertnames("acme")
    assert len(stack.smtp.to("owner@acme.example")) == 2
    assert time.monotonic() - started < 90
