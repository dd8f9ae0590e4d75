"""alertmanager/alertmanager.yml: amtool accepts it and routes owners, admins and
Slack-opt-in tenants where docs/alerts.md says (amtool walks the routing tree only;
inhibition and grouping are exercised with a real Alertmanager in
tests/integration/test_alerts_e2e.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from _support import ROOT
from _support.alerting import AM_CONFIG, AMTOOL
from runledger.alertmanager_config import local_alertmanager_config


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def _route(*labels: str, receivers: str) -> subprocess.CompletedProcess[str]:
    return _amtool(
        "config", "routes", "test", f"--config.file={AM_CONFIG}",
        f"--verify.receivers={receivers}", *labels,
    )  # fmt: skip


def test_amtool_accepts_the_config() -> None:
    out = _amtool("check-config", str(AM_CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 inhibit rules" in out.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # An owner alert goes to the control service's webhook (banner, email, Slack).
        (["alertname=TenantDailyCapReached", "audience=owner", "tenant=acme",
          "severity=critical"], "owner"),
        # A tenant that opted in to Slack routes the same: the control service reads the
        # opt-in from the ledger, so no tenant is ever named in alertmanager.yml.
        (["alertname=TenantDailyCapNearlyReached", "audience=owner", "tenant=slack-tenant",
          "severity=warning"], "owner"),
        # Admin alerts: the banner webhook plus on-call email.
        (["alertname=LedgerDown", "audience=admin", "severity=critical"], "admin"),
        (["alertname=RunCostHigh", "audience=admin", "tenant=acme", "severity=warning"], "admin"),
        # An alert without an audience (a rule someone forgot to label) still reaches admins.
        (["alertname=Unlabelled"], "admin"),
    ],
)  # fmt: skip
def test_routes(labels: list[str], receiver: str) -> None:
    out = _route(*labels, receivers=receiver)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver


def test_a_wrong_receiver_fails_the_route_test() -> None:
    out = _route("audience=owner", "tenant=acme", receivers="admin")
    assert out.returncode == 1


def test_grouping_inhibition_and_repeat_intervals() -> None:
    config = yaml.safe_load(AM_CONFIG.read_text())
    route = config["route"]
    assert route["group_by"] == ["alertname", "tenant"]
    owner = next(r for r in route["routes"] if r["receiver"] == "owner")
    assert owner["repeat_interval"] == "12h"
    inhibit = config["inhibit_rules"]
    assert {"source_matchers": ['alertname="TenantDailyCapReached"'],
            "target_matchers": ['alertname="TenantDailyCapNearlyReached"'],
            "equal": ["tenant"]} in inhibit  # fmt: skip
    assert {"source_matchers": ['alertname=~"LedgerDown|ExporterDown"'],
            "target_matchers": ['requires="ledger"']} in inhibit  # fmt: skip
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].endswith("/v1/alerts/webhook")
            assert hook["http_config"]["authorization"]["type"] == "Bearer"
            assert hook["send_resolved"] is True


def test_the_loopback_copy_keeps_the_routes_and_passes_amtool(tmp_path: Path) -> None:
    path = local_alertmanager_config(
        ROOT, tmp_path, control_url="http://127.0.0.1:18480", token_file=tmp_path / "token",
        smtp=("127.0.0.1", 2525), admin_email="oncall@ops.example",
        timings={"group_wait": "1s", "group_interval": "1s"},
    )  # fmt: skip
    out = _amtool("check-config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    local = yaml.safe_load(path.read_text())
    shipped = yaml.safe_load(AM_CONFIG.read_text())
    assert local["inhibit_rules"] == shipped["inhibit_rules"]
    assert local["route"]["group_by"] == shipped["route"]["group_by"]
    assert local["route"]["group_wait"] == "1s"
    hook = local["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:18480/v1/alerts/webhook"
    assert local["global"]["smtp_smarthost"] == "127.0.0.1:2525"
    admin = next(r for r in local["receivers"] if r["name"] == "admin")
    assert admin["email_configs"][0]["to"] == "oncall@ops.example"
    without_smtp = local_alertmanager_config(
        ROOT, tmp_path / "b", control_url="http://127.0.0.1:1", token_file=tmp_path / "token"
    )
    assert all(
        "email_configs" not in r for r in yaml.safe_load(without_smtp.read_text())["receivers"]
    )
