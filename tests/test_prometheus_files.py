"""prometheus/: promtool accepts the configs and rules, and every rule has a unit test."""

from __future__ import annotations

import re
from typing import Any

import yaml

from _support.exporter import ALLOWED_LABELS, PROM_DIR, check_native_config, run_promtool

LEVEL_RE = re.compile(r"^[a-z_]*:runledger_[a-z0-9_]+:[a-z0-9_]+$")


def _rule_files() -> list[Any]:
    return sorted((PROM_DIR / "rules").glob("*.rules.yml"))


def _rules() -> list[dict[str, Any]]:
    rules = []
    for path in _rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def test_promtool_accepts_the_configs() -> None:
    for name in ("prometheus.yml", "remote_write.example.yml"):
        result = run_promtool("check", "config", str(PROM_DIR / name))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", *map(str, _rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(_rule_files()) == 3


def test_promtool_unit_tests_pass() -> None:
    ours = [PROM_DIR / "tests" / f"{area}-test.yml" for area in ("cost", "pipeline", "outcomes")]
    result = run_promtool("test", "rules", *map(str, ours))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_recording_rule_has_a_promtool_case() -> None:
    tested: set[str] = set()
    for path in sorted((PROM_DIR / "tests").glob("*-test.yml")):
        for case in yaml.safe_load(path.read_text()).get("tests", []):
            for check in case.get("promql_expr_test", []):
                assert check.get("exp_samples"), f"{path.name}: {check['expr']} expects nothing"
                tested.add(check["expr"])
    missing = sorted(r["record"] for r in _rules() if r["record"] not in tested)
    assert not missing, f"recording rules without a promtool test: {missing}"


def test_rules_are_named_level_metric_operations_and_never_average_ratios() -> None:
    for path in _rule_files():
        doc = yaml.safe_load(path.read_text())
        area = path.name.removesuffix(".rules.yml")
        assert [g["name"] for g in doc["groups"]] == [f"{area}.rules"]
    names = [r["record"] for r in _rules()]
    assert len(names) == len(set(names)), "duplicate recording rules"
    for rule in _rules():
        name, expr = rule["record"], rule["expr"]
        assert LEVEL_RE.match(name), name
        assert "avg" not in expr, f"{name} averages"
        for labels in re.findall(r"by \(([^)]*)\)", expr):
            used = {x.strip() for x in labels.split(",")}
            assert used <= ALLOWED_LABELS, (name, used)
        # The level names exactly the labels the rule keeps.
        level = name.split(":")[0]
        kept = re.findall(r"by \(([^)]*)\)", expr)
        want = {x.strip() for x in kept[0].split(",")} if kept else set()
        assert set(filter(None, level.split("_"))) == want, name
        if name.rsplit(":", 1)[1].startswith(("ratio", "mean")):
            assert expr.count(" / ") == 1 or "/ sum" in expr, name


def test_prometheus_config_scrapes_exporter_control_and_alertmanager() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs["runledger-exporter"] == ["exporter:9464"]
    assert jobs["runledger-control"] == ["control:8480"]
    assert jobs["alertmanager"] == ["alertmanager:9093"]
    assert "rules/*.rules.yml" in config["rule_files"]
    text = (PROM_DIR / "prometheus.yml").read_text()
    assert "--storage.tsdb.retention.time=30d" in text
    assert "--enable-feature=exemplar-storage" in text
    remote = yaml.safe_load((PROM_DIR / "remote_write.example.yml").read_text())
    assert remote["remote_write"][0]["url"].endswith("/api/v1/push")


def test_native_stack_config_is_the_real_one_on_loopback(tmp_path: Any) -> None:
    path, result = check_native_config(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs["runledger-exporter"] == ["127.0.0.1:19464"]
    assert jobs["runledger-control"] == ["127.0.0.1:18480"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:19093"
    ]
    assert all(rule.startswith(str(PROM_DIR)) for rule in config["rule_files"])
