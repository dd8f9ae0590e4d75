"""The control service's own /metrics (single process through the Flask client)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from _support import event


def _sample(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match[1]) if match else None


def test_ingest_results_and_request_latency_are_counted(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    token = make_token("agent", "acme")
    auth = {"Authorization": f"Bearer {token}"}
    good = [event("run_started"), event("run_finished")]
    assert client.post("/v1/events", json={"events": good}, headers=auth).status_code == 200
    again = client.post("/v1/events", json={"events": [*good, {**good[0], "phase": "9x"}]},
                        headers=auth)  # fmt: skip
    assert again.json["duplicates"] == 2 and again.json["rejected"] == 1
    assert client.post("/v1/events", json={"events": good}).status_code == 401

    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, 'runledger_control_ingest_events_total{status="accepted"}') == 2
    assert _sample(text, 'runledger_control_ingest_events_total{status="duplicate"}') == 2
    assert _sample(text, 'runledger_control_ingest_events_total{status="rejected"}') == 1
    assert _sample(text, 'runledger_control_request_duration_seconds_count{status="200"}') == 2
    assert _sample(text, 'runledger_control_request_duration_seconds_count{status="401"}') == 1
    assert _sample(text, "runledger_control_webhook_failures_total") == 0


def test_metrics_negotiate_openmetrics(client: Any) -> None:
    resp = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.get_data(as_text=True).rstrip().endswith("# EOF")
    plain = client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


def test_each_app_has_its_own_registry(app: Any, client: Any, db: Any) -> None:
    """Requests to one app show only in its own /metrics. (The webhook-failure counter is
    driven by failed deliveries in tests/control/test_alerts.py.)"""
    from runledger.control import create_app

    other = create_app({"DATABASE": db, "TESTING": True})
    assert client.get("/healthz").status_code == 200
    mine = client.get("/metrics").get_data(as_text=True)
    theirs = other.test_client().get("/metrics").get_data(as_text=True)
    assert _sample(mine, 'runledger_control_request_duration_seconds_count{status="200"}') == 1
    assert _sample(theirs, 'runledger_control_request_duration_seconds_count{status="200"}') is None
