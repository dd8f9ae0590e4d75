"""Helpers for exporter tests: databases, the exporter and control processes, Prometheus."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import requests
import yaml

from _support import ROOT, free_port, stop_process, wait_http

PROM_DIR = ROOT / "prometheus"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TEMPLATE_DB = "rl_template"
RULE_WINDOW_RE = re.compile(r"\[(\d+[smhdw])\]")
ALLOWED_LABELS = {
    "tenant",
    "model",
    "phase",
    "role",
    "playbook",
    "status",
    "le",
    "cap",
    "alertname",
    "check",  # the quality jobs' last-run gauge: sample or drift
}
"""Every label a runledger series or rule may carry (bounded cardinality)."""


def create_database(pg_server: Any) -> tuple[str, Callable[[], None]]:
    """Clone the migrated template into a new database; return its URL and a dropper."""
    name = f"x_{uuid.uuid4().hex[:12]}"
    admin = pg_server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return str(pg_server.get_uri(name)), drop


def start_exporter(
    db_url: str, config: dict[str, Any], workdir: Path, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """Run ``runledger exporter`` on a free loopback port; return the process and base URL."""
    port = port or free_port()
    config_path = workdir / f"exporter-{port}.yml"
    config_path.write_text(yaml.safe_dump(config))
    args = ["exporter", "--port", str(port), "--bind", "127.0.0.1", "--config", str(config_path)]
    env = dict(os.environ, RUNLEDGER_DATABASE_URL=db_url)
    return _serve(args, env, workdir / f"exporter-{port}.log", port, "/metrics")


def _serve(
    args: list[str], env: dict[str, str], log_path: Path, port: int, ready: str
) -> tuple[subprocess.Popen, str]:
    """Start ``runledger <args>`` logging to ``log_path`` and wait until ``ready`` answers on
    ``port``; stop it (by PID) if it never does."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runledger.cli", *args], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + ready, proc=proc)
    except Exception:
        stop_process(proc)
        raise
    return proc, base


def start_control(
    db_url: str, workdir: Path, *, env: dict[str, str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """Run the control service (gunicorn, 2 workers) on a loopback port (free unless given),
    with ``env`` added to its environment."""
    port = port or free_port()
    full_env = dict(os.environ, RUNLEDGER_DATABASE_URL=db_url, **(env or {}))
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = ["control", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    return _serve(args, full_env, workdir / "control.log", port, "/healthz")


def write_prometheus_config(
    workdir: Path, port: int, targets: dict[str, str], rule_window: str
) -> Path:
    """Write prometheus.yml templated from the real one: loopback targets, 1 s intervals.

    The recording rules are copied with every range window replaced by ``rule_window``, so
    a test sees a full window of samples in seconds rather than minutes or days.
    """
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["global"].update(
        {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    )
    config.pop("alerting", None)
    rules_dir = workdir / "rules"
    rules_dir.mkdir(exist_ok=True)
    for path in sorted((PROM_DIR / "rules").glob("*.rules.yml")):
        text = RULE_WINDOW_RE.sub(f"[{rule_window}]", path.read_text())
        (rules_dir / path.name).write_text(text)
    config["rule_files"] = [str(rules_dir / "*.rules.yml")]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "prometheus":
            targets = {**targets, name: f"127.0.0.1:{port}"}
        if name in targets:
            job["static_configs"] = [{"targets": [targets[name]]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """A running Prometheus and a small query client."""

    def __init__(self, proc: subprocess.Popen, base: str) -> None:
        self.proc = proc
        self.base = base

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        resp = requests.get(f"{self.base}/api/v1/query", params=params, timeout=10)
        body = resp.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        resp = requests.get(
            f"{self.base}/api/v1/query_exemplars",
            params={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"},
            timeout=10,
        )
        body = resp.json()
        assert body["status"] == "success", body
        return list(body["data"])

    def wait_for(
        self, expr: str, predicate: Callable[[float | None], bool], timeout: float = 30.0
    ) -> float | None:
        """Poll ``expr`` until ``predicate(value)`` holds; fail naming the expression."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if predicate(value):
                return value
            time.sleep(0.25)
        raise AssertionError(f"{expr} did not reach the expected value in {timeout}s: {value}")


def start_prometheus(config_path: Path, workdir: Path, port: int) -> Prometheus:
    """Start /usr/bin/prometheus with its own data dir and exemplar storage."""
    data = workdir / "prom-data"
    log = open(workdir / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d",
         "--enable-feature=exemplar-storage", "--log.level=warn"],
        stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}: see {log.name}")
        try:
            if requests.get(base + "/-/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise TimeoutError("prometheus did not become ready within 30s")
        time.sleep(0.2)
    return Prometheus(proc, base)


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def check_native_config(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Write the native stack's Prometheus config (fixed loopback ports) under ``tmp_path``
    and check it with promtool; return its path and promtool's result."""
    from runledger.exporter import native_prometheus_config

    path = native_prometheus_config(
        PROM_DIR.parent, tmp_path, control=18480, exporter=19464, alertmanager=19093,
        prometheus=19090,
    )  # fmt: skip
    return path, run_promtool("check", "config", str(path))


def post_events(base: str, token: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """POST ``events`` to the control service at ``base`` as ``token``; return its answer."""
    resp = requests.post(
        f"{base}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def max_seq(db_url: str) -> int:
    """The ledger's highest event ``seq`` (0 when it holds no event)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT COALESCE(max(seq), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


__all__ = [
    "ALLOWED_LABELS",
    "Prometheus",
    "check_native_config",
    "create_database",
    "max_seq",
    "post_events",
    "run_promtool",
    "start_control",
    "start_exporter",
    "start_prometheus",
    "write_prometheus_config",
]
