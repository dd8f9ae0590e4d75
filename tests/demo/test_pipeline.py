"""The demo pipeline as docker compose runs it: it creates its tenants, sends its events to
the control service, and its spans and run logs over OTLP (to Tempo and Loki there; to a
loopback OTLP receiver here), carrying the attributes the dashboards query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from _support.sdk import OtlpReceiver
from runledger.demo.pipeline import main
from runledger.demo.stack import DEMO_TENANTS


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def test_the_demo_seeds_its_tenants_and_sends_events_spans_and_run_logs(
    db_url: str,
    control_server: str,
    otlp_receiver: OtlpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNLEDGER_DATABASE_URL", db_url)
    monkeypatch.setenv("RUNLEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RUNLEDGER_TOKEN", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "runledger-demo")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.url + "/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", otlp_receiver.url + "/v1/logs")
    args = ["--url", control_server, "--create-tenants", "--interval", "0"]
    assert main([*args, "--seed", "7", "--steps", "12"]) == 0
    # Again on the same database: the tenants exist, nothing is created twice.
    assert main([*args, "--seed", "8", "--steps", "1"]) == 0

    with psycopg.connect(db_url) as conn:
        tenants = {r[0] for r in conn.execute("SELECT tenant_id FROM tenants")}
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()
        traces = {r[0] for r in conn.execute("SELECT DISTINCT trace_id FROM runs")}
        tokens = conn.execute("SELECT role, count(*) FROM api_tokens GROUP BY 1").fetchall()
    assert tenants == set(DEMO_TENANTS)
    assert dict(tokens) == {"agent": 3, "owner": 3, "admin": 1}
    assert runs is not None and runs[0] >= 10

    spans = otlp_receiver.spans()
    assert {s.trace_id.hex() for _, s in spans} >= traces
    (service,) = {_attrs(r.attributes)["service.name"] for r, _ in spans}
    assert service == "runledger-demo"
    logs = otlp_receiver.log_records()
    assert len(logs) >= 12, "one run log line per step at least"
    for _, rec in logs:
        attrs = _attrs(rec.attributes)
        # Loki stores OTLP attributes with dots as underscores: the Project Overview's
        # LogQL filters on runledger_project_id, the run-page link reads runledger_run_id.
        loki_names = {k.replace(".", "_") for k in attrs}
        assert {"runledger_project_id", "runledger_run_id", "runledger_tenant_id"} <= loki_names
        assert rec.trace_id.hex() in traces  # Loki's trace_id -> Tempo
