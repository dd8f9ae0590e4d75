"""The tenant-enforcing PromQL proxy: widening attempts against a real Prometheus.

Prometheus scrapes a loopback target exposing two tenants' series; an owner of ``acme``
must get ``acme``'s data only, whatever the query, or a 403 naming the problem.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from _support import free_port, stop_process
from _support.console import bearer
from _support.exporter import start_prometheus
from runledger.control.promproxy import QueryRefused, enforce

METRICS = b"""# TYPE runledger_cost_usd_total counter
runledger_cost_usd_total{tenant="acme",model="gpt-4.1"} 5
runledger_cost_usd_total{tenant="other",model="gpt-4.1"} 7
# TYPE secret_metric gauge
secret_metric{tenant="other",secret_label="x"} 1
# TYPE shared_metric gauge
shared_metric 3
"""


class _Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    work = tmp_path_factory.mktemp("promproxy")
    config = Path(work / "prometheus.yml")
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: fixture\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target.server_address[1]}']\n"
    )
    prom = start_prometheus(config, work, free_port())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = requests.get(prom.base + "/api/v1/query", timeout=5,
                                params={"query": "secret_metric"}).json()  # fmt: skip
            if body["data"]["result"]:
                break
            time.sleep(0.3)
        yield prom.base
    finally:
        stop_process(prom.proc)
        target.shutdown()


@pytest.fixture
def proxy(client: Any, prometheus: str, make_tenant: Any, make_token: Any,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # fmt: skip
    monkeypatch.setenv("RUNLEDGER_PROMETHEUS_URL", prometheus)
    make_tenant("acme")
    return {
        "client": client, "owner": bearer(make_token("owner", "acme")),
        "admin": bearer(make_token("admin")), "agent": bearer(make_token("agent", "acme")),
    }  # fmt: skip


def _q(proxy: dict[str, Any], query: str, who: str = "owner", path: str = "query") -> Any:
    return proxy["client"].get(f"/prom/api/v1/{path}", query_string={"query": query},
                               headers=proxy[who])  # fmt: skip


def _tenants(resp: Any) -> set[str | None]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {r["metric"].get("tenant") for r in resp.get_json()["data"]["result"]}


@pytest.mark.parametrize(
    "query",
    [
        "runledger_cost_usd_total",
        "sum by (tenant) (runledger_cost_usd_total)",
        "runledger_cost_usd_total or secret_metric",
        "runledger_cost_usd_total unless on(model) secret_metric",
        "secret_metric or on() vector(1)",
        'label_replace(runledger_cost_usd_total, "who", "$1", "tenant", "(.*)")',
        "max_over_time(runledger_cost_usd_total[1m:1s])",
        '{__name__=~".+"}',
        "shared_metric",
        'topk(5, {__name__=~"runledger.*|secret.*"})',
    ],
)
def test_owner_queries_are_scoped_to_their_tenant(proxy: dict[str, Any], query: str) -> None:
    found = _tenants(_q(proxy, query))
    assert found <= {"acme", None}, found
    if "vector(1)" not in query:
        assert "other" not in found


def test_scoped_values_are_the_tenants_own(proxy: dict[str, Any]) -> None:
    owner = _q(proxy, "sum(runledger_cost_usd_total)").get_json()["data"]["result"]
    admin = _q(proxy, "sum(runledger_cost_usd_total)", who="admin").get_json()["data"]["result"]
    assert float(owner[0]["value"][1]) == 5.0 and float(admin[0]["value"][1]) == 12.0
    assert _tenants(_q(proxy, "runledger_cost_usd_total", who="admin")) == {"acme", "other"}
    now = time.time()
    ranged = proxy["client"].get("/prom/api/v1/query_range", headers=proxy["owner"], query_string={
        "query": "runledger_cost_usd_total", "start": now - 30, "end": now, "step": 5})  # fmt: skip
    assert _tenants(ranged) == {"acme"}


@pytest.mark.parametrize(
    "query",
    [
        'runledger_cost_usd_total{tenant="other"}',
        'runledger_cost_usd_total{tenant=~".*"}',
        'runledger_cost_usd_total{tenant!="acme"}',
        'runledger_cost_usd_total{tenant!~"acme"}',
        'sum(runledger_cost_usd_total) or secret_metric{tenant="other"}',
        'label_replace(runledger_cost_usd_total, "tenant", "other", "", "")',
        'max_over_time(secret_metric{tenant=~"oth.*"}[5m:1m])',
        'runledger_cost_usd_total{model="\\"} or secret_metric{x=\\""}',
    ],
)
def test_widening_attempts_are_refused(proxy: dict[str, Any], query: str) -> None:
    resp = _q(proxy, query)
    body = resp.get_json()
    assert resp.status_code == 403, body
    assert body["fields"][0]["field"] == "query" and "tenant" in body["error"]


def test_series_and_label_endpoints_are_scoped(proxy: dict[str, Any]) -> None:
    client, owner = proxy["client"], proxy["owner"]
    series = client.get("/prom/api/v1/series", query_string={"match[]": '{__name__=~".+"}'},
                        headers=owner).get_json()["data"]  # fmt: skip
    assert series and {s.get("tenant") for s in series} == {"acme"}
    refused = client.get("/prom/api/v1/series", headers=owner,
                         query_string={"match[]": 'secret_metric{tenant="other"}'})  # fmt: skip
    assert refused.status_code == 403 and refused.get_json()["fields"][0]["field"] == "match[]"
    values = client.get("/prom/api/v1/label/tenant/values", headers=owner).get_json()["data"]
    assert values == ["acme"]
    labels = client.get("/prom/api/v1/labels", headers=owner).get_json()["data"]
    assert "tenant" in labels and "secret_label" not in labels
    admin_labels = client.get("/prom/api/v1/labels", headers=proxy["admin"]).get_json()["data"]
    assert "secret_label" in admin_labels
    assert client.get("/prom/api/v1/labels", headers=proxy["agent"]).status_code == 403


def test_enforcement_parses_rather_than_matches_text() -> None:
    assert enforce('foo{job="tenant"}', "acme") == 'foo{job="tenant",tenant="acme"}'
    # The parser prints label values without escaping quotes: the rewritten query is parsed
    # again and every selector checked, so a value that would break out is refused.
    for sneaky in ('foo{job="\\"} or secret_metric{x=\\""}', 'foo{job="a\\"b"}'):
        with pytest.raises(QueryRefused, match=r"could not (be )?scope"):
            enforce(sneaky, "acme")
    with pytest.raises(QueryRefused, match="does not parse"):
        enforce("sum(", "acme")
    with pytest.raises(QueryRefused, match="'or' between matchers"):
        enforce('foo{a="1" or tenant="other"}', "acme")
