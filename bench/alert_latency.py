"""Alert latency: from the event that crosses a tenant's daily cap to the owner's banner.

Two paths, each over CROSSINGS crossings (a fresh $1-cap tenant each), timed from the start
of the request that crosses the cap to the banner being visible in ``GET /v1/banners``:

- ``cap_block_banner_s``: a budget lease the cap refuses; the control service opens the
  banner in that request (target: p95 under 1 s).
- ``rule_alert_banner_s``: an event whose spend crosses the cap, through the exporter,
  Prometheus (1 s scrape and evaluation), the TenantDailyCapReached rule (``for:`` 1 s),
  Alertmanager (group_wait 1 s) and the control service's webhook.

Baseline, in the same run: one ``GET /v1/banners`` round trip (the floor of any banner
check). ``rule_over_cap_block_p50`` says how much sooner an owner hears of a refused lease
than of the rule alert. ``production_rule_alert_banner_s`` is the rule path computed for the
shipped intervals (docs/benchmarks.md shows the arithmetic). Writes
bench/results/alert_latency.json.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, fresh_database, postgres, stop_process, write_result

from runledger.alert_rules import load_thresholds, render_files
from runledger.alertmanager_config import local_alertmanager_config
from runledger.exporter import native_prometheus_config
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

ROOT = Path(__file__).resolve().parents[1]
CROSSINGS = 12
BASELINE_GETS = 200
TOKEN = "bench-webhook-secret"
TEST_TIMINGS = {"scrape_s": 1.0, "evaluation_s": 1.0, "for_s": 1.0, "group_wait_s": 1.0,
                "gauge_refresh_s": 0.2}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 4), "p95": round(percentile(values, 0.95), 4)}


def start(argv: list[str], log: Path, ready: str, env: dict[str, str] | None = None) -> Any:
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: see {log}")
        try:
            if requests.get(ready, timeout=1).status_code < 500:
                return proc
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"{ready} did not answer")
        time.sleep(0.1)


def banner_seen(url: str, owner: str, source: str) -> bool:
    resp = requests.get(f"{url}/v1/banners", headers={"Authorization": f"Bearer {owner}"},
                        timeout=10)  # fmt: skip
    return any(b["source"] == source for b in resp.json()["banners"])


def wait_banner(url: str, owner: str, source: str, since: float, timeout: float) -> float:
    while time.perf_counter() - since < timeout:
        if banner_seen(url, owner, source):
            return time.perf_counter() - since
        time.sleep(0.02)
    raise RuntimeError(f"no {source} banner within {timeout}s")


def production_figure() -> dict[str, Any]:
    """The rule path with the shipped intervals: worst case and mean, in seconds."""
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())["global"]
    am = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())["route"]
    exporter = yaml.safe_load(
        (ROOT / "exporter" / "runledger" / "exporter" / "defaults.yml").read_text()
    )
    thresholds = load_thresholds(ROOT / "prometheus" / "thresholds.yml")

    def seconds(text: str) -> float:
        units = {"s": 1, "m": 60, "h": 3600}
        return float(text[:-1]) * units[text[-1]]

    refresh = float(exporter["gauge_refresh_seconds"])
    scrape = seconds(prom["scrape_interval"])
    evaluation = seconds(prom["evaluation_interval"])
    hold = seconds(thresholds["TenantDailyCapReached"]["for"])
    group_wait = seconds(am["group_wait"])
    # Waits on a period cost up to one period (half on average): the gauge refresh, the
    # scrape, the recording rule's evaluation and the alert rule's evaluation (one later).
    periodic = refresh + scrape + 2 * evaluation
    return {
        "intervals_s": {
            "gauge_refresh": refresh,
            "scrape": scrape,
            "evaluation": evaluation,
            "for": hold,
            "group_wait": group_wait,
        },
        "worst": periodic + hold + evaluation + group_wait,
        "mean": periodic / 2 + hold + evaluation / 2 + group_wait,
    }


def main() -> int:
    with postgres() as server, tempfile.TemporaryDirectory(prefix="rl-alert-bench-") as tmp:
        work = Path(tmp)
        url = fresh_database(server, "alert_latency")
        tokens: dict[str, tuple[str, str]] = {}
        with psycopg.connect(url) as conn:
            for i in range(2 * CROSSINGS):
                tenant = f"t{i:02d}"
                create_tenant(conn, tenant, daily_cap_usd=Decimal(1))
                tokens[tenant] = (
                    create_token(conn, role="agent", label=tenant, tenant_id=tenant),
                    create_token(conn, role="owner", label=tenant, tenant_id=tenant),
                )
        (work / "token").write_text(TOKEN)
        ports = {name: free_port() for name in ("control", "exporter", "prom", "am")}
        control = f"http://127.0.0.1:{ports['control']}"
        am_config = local_alertmanager_config(
            ROOT, work / "am", control_url=control, token_file=work / "token",
            timings={"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        )  # fmt: skip
        exporter_config = work / "exporter.yml"
        exporter_config.write_text(yaml.safe_dump(
            {"poll_interval_seconds": 0.2, "gauge_refresh_seconds": TEST_TIMINGS["gauge_refresh_s"]}
        ))  # fmt: skip
        prom_config = native_prometheus_config(
            ROOT, work / "prom", control=ports["control"], exporter=ports["exporter"],
            alertmanager=ports["am"], prometheus=ports["prom"], scrape_interval="1s",
        )  # fmt: skip
        render_files(ROOT / "prometheus" / "thresholds.yml", work / "alerts", for_override="1s")
        config = yaml.safe_load(prom_config.read_text())
        config["rule_files"] = [str(ROOT / "prometheus" / "rules" / "*.rules.yml"),
                                str(work / "alerts" / "*.yml")]  # fmt: skip
        prom_config.write_text(yaml.safe_dump(config, sort_keys=False))
        procs = []
        try:
            procs.append(start(
                ["prometheus-alertmanager", f"--config.file={am_config}",
                 f"--storage.path={work / 'am-data'}",
                 f"--web.listen-address=127.0.0.1:{ports['am']}", "--cluster.listen-address="],
                work / "am.log", f"http://127.0.0.1:{ports['am']}/-/ready",
            ))  # fmt: skip
            procs.append(start(
                [sys.executable, "-m", "runledger.cli", "control", "--bind",
                 f"127.0.0.1:{ports['control']}", "--workers", "2"],
                work / "control.log", f"{control}/healthz",
                env={"RUNLEDGER_DATABASE_URL": url, "RUNLEDGER_ALERT_WEBHOOK_TOKEN": TOKEN},
            ))  # fmt: skip
            procs.append(start(
                [sys.executable, "-m", "runledger.cli", "exporter", "--bind", "127.0.0.1",
                 "--port", str(ports["exporter"]), "--config", str(exporter_config)],
                work / "exporter.log", f"http://127.0.0.1:{ports['exporter']}/metrics",
                env={"RUNLEDGER_DATABASE_URL": url},
            ))  # fmt: skip
            procs.append(start(
                ["prometheus", f"--config.file={prom_config}",
                 f"--storage.tsdb.path={work / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{ports['prom']}", "--log.level=warn"],
                work / "prom.log", f"http://127.0.0.1:{ports['prom']}/-/ready",
            ))  # fmt: skip
            time.sleep(3)  # the first scrapes and rule evaluations

            names = sorted(tokens)
            baseline = []
            owner0 = tokens[names[0]][1]
            for _ in range(BASELINE_GETS):
                t0 = time.perf_counter()
                banner_seen(control, owner0, "cap_block")
                baseline.append(time.perf_counter() - t0)

            cap_block = []
            for tenant in names[:CROSSINGS]:
                agent, owner = tokens[tenant]
                t0 = time.perf_counter()
                resp = requests.post(
                    f"{control}/v1/caps/leases",
                    json={"tenant_id": tenant, "holder": "bench", "min_usd": "1.5"},
                    headers={"Authorization": f"Bearer {agent}"}, timeout=10,
                )  # fmt: skip
                assert resp.status_code == 402, resp.text
                cap_block.append(wait_banner(control, owner, "cap_block", t0, 5))

            rule = []
            for tenant in names[CROSSINGS:]:
                agent, owner = tokens[tenant]
                ev = {"event_id": str(uuid.uuid4()), "type": "artifact_written",
                      "tenant_id": tenant, "project_id": f"{tenant}-p", "run_id": f"{tenant}-r",
                      "phase": "build", "role": "implementer",
                      "occurred_at": datetime.now(UTC).isoformat(), "model": "gpt-a",
                      "cost_usd": "1.05", "artifact_path": "a.html",
                      "artifact_version": 1}  # fmt: skip
                t0 = time.perf_counter()
                resp = requests.post(
                    f"{control}/v1/events", json={"events": [ev]},
                    headers={"Authorization": f"Bearer {agent}"}, timeout=10,
                )  # fmt: skip
                assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text
                rule.append(wait_banner(control, owner, "alertmanager", t0, 60))
        finally:
            for proc in reversed(procs):
                stop_process(proc)

    base = summary(baseline)
    blocked = summary(cap_block)
    ruled = summary(rule)
    figures = {
        "crossings": CROSSINGS,
        "baseline_banner_get_s": base,
        "cap_block_banner_s": blocked,
        "cap_block_over_baseline_p50": round(blocked["p50"] / base["p50"], 2),
        "cap_block_target_met": blocked["p95"] < 1.0,
        "rule_alert_banner_s": ruled,
        "rule_alert_test_intervals_s": TEST_TIMINGS,
        "rule_over_cap_block_p50": round(ruled["p50"] / blocked["p50"], 1),
        "production_rule_alert_banner_s": production_figure(),
    }
    path = write_result("alert_latency", figures)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
