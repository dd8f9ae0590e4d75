"""prometheus/alerts/: generated from the one thresholds file, valid, complete, documented,
and unit-tested by promtool (fires, not before `for:`, near miss, resolves)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from _support import ROOT
from _support.exporter import PROM_DIR, run_promtool
from runledger.alert_rules import ALERTS, AREAS, alert_names, load_thresholds, render
from runledger.cli import main

ALERT_TESTS = [PROM_DIR / "tests" / f"{area}-alerts-test.yml" for area in AREAS]
THRESHOLDS = PROM_DIR / "thresholds.yml"


def _alert_files() -> list[Path]:
    """Every rule file Prometheus loads from alerts/ (quality.yml included when present)."""
    return sorted((PROM_DIR / "alerts").glob("*.yml"))


def _alerts() -> list[dict[str, Any]]:
    found = []
    for path in _alert_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [r for r in group["rules"] if "alert" in r]
    return found


def test_the_rule_files_are_rendered_from_the_thresholds_file() -> None:
    result = CliRunner().invoke(
        main, ["alerts", "render", "--check", "--thresholds", str(THRESHOLDS),
               "--out", str(PROM_DIR / "alerts")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # A changed threshold shows in the rendered rule, and only there.
    values = load_thresholds(THRESHOLDS)
    values["TenantDailyCapNearlyReached"] = {**values["TenantDailyCapNearlyReached"], "ratio": 0.7}
    changed = render(values)["owner.alerts.yml"]
    assert "tenant:runledger_cap_utilisation:ratio >= 0.7" in changed
    assert (
        render(values)["admin.alerts.yml"] == (PROM_DIR / "alerts" / "admin.alerts.yml").read_text()
    )


def test_a_stale_rule_file_fails_the_check(tmp_path: Path) -> None:
    out = tmp_path / "alerts"
    runner = CliRunner()
    args = ["alerts", "render", "--thresholds", str(THRESHOLDS), "--out", str(out)]
    assert runner.invoke(main, args).exit_code == 0
    (out / "owner.alerts.yml").write_text("groups: []\n")
    stale = runner.invoke(main, [*args, "--check"])
    assert stale.exit_code == 1 and "owner.alerts.yml" in stale.output
    bad = tmp_path / "thresholds.yml"
    bad.write_text(THRESHOLDS.read_text().replace("  for: 2m\n", "  for: soon\n", 1))
    refused = runner.invoke(main, ["alerts", "render", "--thresholds", str(bad), "--out", str(out)])
    assert refused.exit_code == 1 and "TenantDailyCapNearlyReached needs a 'for:'" in refused.output


def test_promtool_accepts_every_alert_file_and_prometheus_loads_them() -> None:
    result = run_promtool("check", "rules", *map(str, _alert_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert "alerts/*.yml" in config["rule_files"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = run_promtool("test", "rules", *map(str, ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_for_labels_and_annotations() -> None:
    ours = set(alert_names())
    alerts = _alerts()
    assert ours <= {a["alert"] for a in alerts}
    for alert in alerts:
        name = alert["alert"]
        assert re.match(r"^[A-Z][A-Za-z]+$", name), name
        assert alert.get("for"), f"{name} has no for:"
        labels = alert["labels"]
        assert labels["severity"] in ("critical", "warning", "info"), name
        assert labels["audience"] in ("owner", "admin"), name
        notes = alert["annotations"]
        for key in ("summary", "description", "runbook_url"):
            assert notes.get(key), f"{name} has no {key}"
        if name in ours:
            assert notes.get("dashboard"), f"{name} has no dashboard"
            assert notes["runbook_url"] == f"docs/runbook.md#{name.lower()}"
            tenant_board = "/d/runledger-tenant?var-tenant={{ $labels.tenant }}"
            assert notes["dashboard"] in ("/d/runledger-admin", tenant_board)
    spec = {
        "owner": {"TenantDailyCapNearlyReached", "TenantDailyCapReached",
                  "ValidationFailuresRepeated", "PhaseStalled", "ProofOverdue"},
        "admin": {"TenantDailyCapBreached", "ModelErrorSpike", "AlertDeliveryFailing",
                  "QueueLatencySustained", "PublisherFrozen", "ExporterDown", "LedgerDown",
                  "HumanInterventionRateHigh", "RunCostHigh", "RunFailureRateHigh"},
    }  # fmt: skip
    for audience, names in spec.items():
        assert names <= set(alert_names(audience)), audience


def _cases() -> dict[str, dict[str, list[Any]]]:
    """Per alert name: the expected alert lists of every promtool case, by kind."""
    cases: dict[str, dict[str, list[Any]]] = {}
    for path in sorted((PROM_DIR / "tests").glob("*-test.yml")):
        for group in yaml.safe_load(path.read_text()).get("tests", []):
            for case in group.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "silent"
                cases.setdefault(case["alertname"], {"fires": [], "silent": []})[kind].append(
                    case.get("exp_alerts") or []
                )
    return cases


def test_every_alert_has_a_firing_case_and_silent_cases() -> None:
    cases = _cases()
    for alert in ALERTS:
        found = cases.get(alert.name)
        assert found, f"{alert.name} has no promtool case"
        assert found["fires"], f"{alert.name} never fires in a promtool case"
        # Before `for:` and after it resolves: at least two silent evaluations.
        assert len(found["silent"]) >= 2, f"{alert.name} lacks its silent cases"
        if alert.per_tenant:
            for expected in found["fires"]:
                assert all("tenant" in e["exp_labels"] for e in expected), alert.name


def test_thresholds_live_in_one_file_and_the_stalled_phase_matches_the_exporter() -> None:
    values = load_thresholds(THRESHOLDS)
    defaults = yaml.safe_load(
        (ROOT / "exporter" / "runledger" / "exporter" / "defaults.yml").read_text()
    )
    assert defaults["stuck_after_seconds"] == values["PhaseStalled"]["hours"] * 3600
    previous_sprint = (values["HumanInterventionRateHigh"]["ratio"], values["RunCostHigh"]["usd"],
                       values["RunFailureRateHigh"]["ratio"])  # fmt: skip
    assert previous_sprint == (0.30, 0.01, 0.20)
    # No number in an alert expression except through the thresholds file (a gauge that is
    # a boolean or a count compared with 0 is not a threshold).
    for alert in ALERTS:
        bare = re.sub(r"\[\[\w+\]\]|\[5m\]|_rate5m|mean5m|\"[^\"]*\"|(>|==) 0\b", "", alert.expr)
        assert not re.search(r"(?<![\w:])\d", bare), (alert.name, bare)


def test_every_alert_has_a_runbook_entry_and_a_line_in_the_alerts_doc() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^### (\w+)$", runbook, re.M)}
    alerts_doc = (ROOT / "docs" / "alerts.md").read_text()
    for name in alert_names():
        assert name.lower() in anchors, f"docs/runbook.md has no entry for {name}"
        entry = runbook.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Means**", "**Confirm**", "**Do**"):
            assert part in entry, f"{name}'s runbook entry lacks {part}"
        assert "```promql" in entry, f"{name}'s runbook entry has no query"
        assert f"`{name}`" in alerts_doc, f"docs/alerts.md does not list {name}"
