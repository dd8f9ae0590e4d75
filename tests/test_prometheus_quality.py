"""prometheus/alerts/quality.yml: promtool accepts it, its unit tests pass, every alert is
complete, Prometheus loads it, and its runbook entries exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from _support.exporter import PROM_DIR, check_native_config, run_promtool

ALERTS = PROM_DIR / "alerts" / "quality.yml"
RUNBOOK = PROM_DIR.parent / "docs" / "runbook.md"


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    assert [g["name"] for g in doc["groups"]] == ["quality.alerts"]
    return list(doc["groups"][0]["rules"])


def test_promtool_accepts_the_quality_alerts_and_their_unit_tests_pass() -> None:
    checked = run_promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 2 rules found" in checked.stdout
    tested = run_promtool("test", "rules", str(PROM_DIR / "tests" / "quality-test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_quality_alert_is_complete_and_tested_firing_pending_and_silent() -> None:
    cases = yaml.safe_load((PROM_DIR / "tests" / "quality-test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case.get("alert_rule_test", [])]
    for rule in _alerts():
        name = rule["alert"]
        assert re.fullmatch(r"(?:[A-Z][a-z]+)+", name), name
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["labels"]["audience"] == "admin"
        ann = rule["annotations"]
        assert ann["summary"] and "{{" not in ann["summary"], name
        assert "{{ $labels." in ann["description"], name
        assert ann["runbook_url"] == f"docs/runbook.md#{name.lower()}"
        assert ann["dashboard"] == "/d/runledger-admin"
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case that fires"
        assert sum(1 for c in mine if not c["exp_alerts"]) >= 2, f"{name}: no silent cases"


def test_the_runbook_has_an_entry_per_quality_alert() -> None:
    text = RUNBOOK.read_text()
    headings = {
        re.sub(r"[^a-z0-9]", "", line.lstrip("#").strip().lower())
        for line in text.splitlines()
        if line.startswith("#")
    }
    for rule in _alerts():
        assert rule["alert"].lower() in headings, f"docs/runbook.md lacks {rule['alert']}"


def test_prometheus_loads_the_quality_alerts_from_its_config(tmp_path: Path) -> None:
    _, result = check_native_config(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(ALERTS) in result.stdout
