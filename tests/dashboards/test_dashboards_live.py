"""Every dashboard query against real backends, after a deterministic workload.

The workload of the exporter tests is posted through the real control service (two rounds,
a few seconds apart, so rates move), tailed by the real exporter and scraped by a real
Prometheus evaluating the project's recording rules (their windows shortened to fit the
test). Then every PromQL target of every panel, with its template variables substituted
(All, then each value alone), runs on Prometheus and must return data; every SQL target
runs on PostgreSQL with Grafana's macros expanded and must return rows with the columns
its panel's links and overrides name.

Judged alerts go through the product: Alertmanager's webhook delivers two fired alerts and an
admin judges them (``POST /v1/alerts/outcomes``), so the alert-precision panels have data.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from _support import free_port, stop_process
from _support.alerting import WEBHOOK_TOKEN, judge_alerts
from _support.exporter import (
    Prometheus,
    max_seq,
    post_events,
    start_control,
    start_exporter,
    start_prometheus,
    write_prometheus_config,
)
from _support.grafana import Target, expand_sql, expand_vars, targets
from _support.workload import DEFAULT_TARGET, PHASE_TARGETS, TENANT_CAPS, workload
from runledger._env import PROMETHEUS_URL
from runledger.dashboards import build
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

pytestmark = pytest.mark.timeout(180)

WINDOW = "20s"
"""Every rule window and ``$__rate_interval`` in the test (1 s scrapes)."""
RANGE = "120s"
"""``$__range``: the whole scenario."""
PROJECT = "acme-p1-r1"
OWNERS = ("acme", "globex")
"""Tenants whose owners query the owners' Tenant Overview through the console's proxy."""

MAY_BE_EMPTY = {
    "Active alerts (banners)": "owner alerts fire only after their `for:` (minutes)",
}
"""Targets the workload cannot fill, and why."""

BUILT = build()


@dataclass
class Scenario:
    prom: Prometheus
    db_url: str
    values: dict[str, list[str]]
    started: datetime
    at: float
    control: str
    owners: dict[str, str]
    """Owner tokens of two workload tenants (their Grafana organisations' datasource tokens)."""
    results: dict[str, Any] = field(default_factory=dict)


def _post(base: str, token: str, events: list[dict[str, Any]]) -> None:
    body = post_events(base, token, events)
    assert body["accepted"] == len(events), body


def _label_values(prom: Prometheus, query: str) -> list[str]:
    m = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
    assert m, query
    resp = requests.get(
        f"{prom.base}/api/v1/label/{m[2]}/values", params={"match[]": m[1]}, timeout=10
    )
    body = resp.json()
    assert body["status"] == "success", body
    return list(body["data"])


@pytest.fixture(scope="module")
def scenario(module_db_url: str, module_workdir: Path) -> Any:
    db_url, workdir = module_db_url, module_workdir
    tokens = {}
    with psycopg.connect(db_url) as conn:
        for tenant, cap in TENANT_CAPS.items():
            create_tenant(conn, tenant, daily_cap_usd=Decimal(cap))
            tokens[tenant] = create_token(conn, role="agent", label=tenant, tenant_id=tenant)
        admin = create_token(conn, role="admin", label="judge", tenant_id=None)
        owners = {
            t: create_token(conn, role="owner", label=f"grafana {t}", tenant_id=t) for t in OWNERS
        }
    procs = []
    port = free_port()
    try:
        control, control_url = start_control(
            db_url,
            workdir,
            env={
                "RUNLEDGER_ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
                # The query proxy's upstream: the Prometheus started below.
                PROMETHEUS_URL: f"http://127.0.0.1:{port}",
            },
        )
        procs.append(control)
        exporter, exporter_url = start_exporter(
            db_url,
            {
                "poll_interval_seconds": 0.2,
                "gauge_refresh_seconds": 0.5,
                "default_phase_target_seconds": DEFAULT_TARGET,
                "phase_targets_seconds": PHASE_TARGETS,
            },
            workdir,
        )
        procs.append(exporter)
        config = write_prometheus_config(
            workdir,
            port,
            {
                "runledger-exporter": exporter_url.removeprefix("http://"),
                "runledger-control": control_url.removeprefix("http://"),
            },
            WINDOW,
        )
        prom = start_prometheus(config, workdir, port)
        procs.append(prom.proc)
        prom.wait_for('up{job="runledger-exporter"}', lambda v: v == 1)

        now = datetime.now(UTC)
        day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        start = max(now - timedelta(seconds=600), day_start + timedelta(seconds=1))
        for round_no in (1, 2):
            for tenant, batches in workload(round_no, start, now).items():
                for batch in batches:
                    _post(control_url, tokens[tenant], batch)
            # Two alerts judged each round: the precision rate sees the counters move.
            judge_alerts(control_url, admin, "TenantDailyCapNearlyReached",
                         ["true_positive", "false_positive"], f"d{round_no}")  # fmt: skip
            last = max_seq(db_url)
            prom.wait_for("runledger_exporter_tailed_seq", lambda v, last=last: v == last)
            time.sleep(4)  # samples of each round in the rule windows
        prom.wait_for("sum(runledger_alert_judgements_total)", lambda v: v == 4)
        prom.wait_for("count(tenant:runledger_cap_hits:increase1d > 0)", lambda v: v == 1)
        values = {}
        for t in targets(BUILT):
            if t.panel_type == "variable" and t.datasource == "prometheus":
                values[t.panel.removeprefix("variable ")] = _label_values(prom, t.query)
        values["project"] = [PROJECT]
        yield Scenario(
            prom, db_url, values, start - timedelta(minutes=5), time.time(), control_url, owners
        )
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def _run_promql(s: Scenario, t: Target, values: dict[str, list[str]]) -> list[Any]:
    expr = expand_vars(
        t.query, values, {"__rate_interval": WINDOW, "__range": RANGE, "__interval": "5s"}
    )
    if t.instant:
        params = {"query": expr, "time": f"{s.at:.3f}"}
        url = f"{s.prom.base}/api/v1/query"
    else:
        params = {"query": expr, "start": f"{s.at - 60:.3f}", "end": f"{s.at:.3f}", "step": "5"}
        url = f"{s.prom.base}/api/v1/query_range"
    body = requests.get(url, params=params, timeout=10).json()
    assert body["status"] == "success", (t.file, t.panel, expr, body)
    return [
        r
        for r in body["data"]["result"]
        if any(v[1] != "NaN" for v in (r.get("values") or [r["value"]]))
    ]


PROM_TARGETS = [
    t
    for t in targets(BUILT)
    if t.datasource in ("prometheus", "runledger-tenant-prom") and t.panel_type != "variable"
]


def test_the_variables_list_the_workloads_tenants_models_and_phases(scenario: Scenario) -> None:
    assert set(TENANT_CAPS) <= set(scenario.values["tenant"])
    assert {"gpt-a", "claude-b"} <= set(scenario.values["model"])
    assert {"intake", "build", "review", "publish"} <= set(scenario.values["phase"])


@pytest.mark.parametrize(
    "target", PROM_TARGETS, ids=lambda t: f"{t.file}:{t.panel}:{t.raw['refId']}"
)
def test_every_promql_target_returns_data(scenario: Scenario, target: Target) -> None:
    # A single-value variable (the owners' tenant) gets its first value, not them all.
    single = {
        v["name"]: scenario.values[v["name"]][:1]
        for v in BUILT[target.file]["templating"]["list"]
        if v["type"] == "query" and not v.get("multi")
    }
    rows = _run_promql(scenario, target, {**scenario.values, **single})
    if target.panel in MAY_BE_EMPTY:
        return
    assert rows, f"{target.file} / {target.panel}: no data for {target.query}"
    # One value at a time runs too (what a user filtering on one tenant sees).
    for name in ("tenant", "model", "phase"):
        if f"${name}" in target.query or f"${{{name}" in target.query:
            for value in scenario.values[name]:
                _run_promql(scenario, target, {**scenario.values, name: [value]})


def test_the_spend_panels_show_the_ledgers_figures(scenario: Scenario) -> None:
    (spend,) = [
        t
        for t in PROM_TARGETS
        if t.file == "dashboards/admin-overview.json" and t.panel == "Spend today"
    ]
    (row,) = _run_promql(scenario, spend, scenario.values)
    with psycopg.connect(scenario.db_url) as conn:
        ledger = conn.execute(
            "SELECT sum(spend_usd) FROM cap_usage WHERE date = (now() AT TIME ZONE 'UTC')::date"
        ).fetchone()
    assert ledger is not None
    assert float(row["value"][1]) == pytest.approx(float(ledger[0]))
    assert float(ledger[0]) == pytest.approx(0.203 * 8)


SQL_TARGETS = [t for t in targets(BUILT) if t.datasource == "postgres"]


def _referenced_columns(file: str, panel_title: str) -> set[str]:
    panel = next(p for p in BUILT[file]["panels"] if p["title"] == panel_title)
    names = {o["matcher"]["options"] for o in panel["fieldConfig"].get("overrides", [])}
    names |= set(re.findall(r"__data\.fields\.(\w+)", str(panel)))
    if panel["type"] in ("state-timeline", "heatmap", "timeseries"):
        names.add("time")
    return names


@pytest.mark.parametrize("target", SQL_TARGETS, ids=lambda t: f"{t.file}:{t.panel}")
def test_every_sql_target_runs_and_returns_its_columns(scenario: Scenario, target: Target) -> None:
    sql = expand_sql(
        target.query,
        scenario.values,
        scenario.started,
        datetime.now(UTC) + timedelta(minutes=1),
        "60s",
    )
    with psycopg.connect(scenario.db_url, row_factory=dict_row) as conn:
        cur = conn.execute(sql.encode())
        rows = cur.fetchall()
        columns = [c.name for c in cur.description or ()]
    assert rows, f"{target.file} / {target.panel}: no rows for {sql}"
    if target.panel_type != "variable":
        missing = _referenced_columns(target.file, target.panel) - set(columns)
        assert not missing, (target.panel, missing, columns)
    if target.panel == "variable project":
        assert PROJECT in {r["project_id"] for r in rows}
    if target.panel == "Last 10 failures":
        assert len(rows) == 10 and {r["kind"] for r in rows} == {"run_failed", "validation_failed"}
        assert all(r["trace_id"] for r in rows)
    if target.panel == "Today's spend by model":
        assert {r["model"] for r in rows} == {"gpt-a", "claude-b", "none"}
        assert sum(r["spend"] for r in rows) == Decimal("0.203") * 8
    if target.panel == "Caps today":
        assert [(r["tenant"], r["blocked"]) for r in rows][:1] == [("initech", True)]
        assert {r["tenant"] for r in rows} == set(TENANT_CAPS)
    if target.panel == "Top stuck projects":
        assert [r["project_id"] for r in rows] == ["umbrella-p1-r1"]
    if target.panel == "Next action":  # run8 (build) started last, after run7 was queued
        assert rows == [
            {
                "project_id": PROJECT,
                "phase": "publish",
                "last_run_id": f"{PROJECT}-run8",
                "last_run_status": "running",
                "next_action": "A implementer run is running: wait for it",
            }
        ]
    if target.panel.startswith("Flags"):
        assert {r["flag"] for r in rows} == {"run_failed", "validation_failed", "user_override"}
    if target.panel == "Artifact versions":
        assert {r["metric"] for r in rows} == {"brief.md", "site/index.html"}
        assert max(r["version"] for r in rows) == 2


def test_a_spend_spike_links_to_the_traces_that_spent(scenario: Scenario) -> None:
    """The Spend rate panel's exemplars carry the trace ids of the events behind the spend."""
    (target,) = [
        t
        for t in PROM_TARGETS
        if t.file == "dashboards/admin-overview.json" and t.panel == "Spend rate by model"
    ]
    assert target.raw["exemplar"] is True
    expr = expand_vars(target.query, scenario.values, {"__rate_interval": WINDOW})
    found = scenario.prom.exemplars(expr, scenario.at - 120, scenario.at)
    traces = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    with psycopg.connect(scenario.db_url) as conn:
        spent = {
            r[0] for r in conn.execute("SELECT DISTINCT trace_id FROM events WHERE cost_usd > 0")
        }
    assert traces and traces <= spent, (traces, spent)


# -- the owners' Tenant Overview through the console's tenant-enforcing query proxy ----------

OWNER_FILE = "owners/dashboards/tenant-overview.json"
OWNER_TARGETS = [t for t in PROM_TARGETS if t.file == OWNER_FILE]
OWNER_VARIABLES = [t for t in targets(BUILT) if t.file == OWNER_FILE and t.panel_type == "variable"]


def _proxy(
    s: Scenario, owner: str, path: str, params: dict[str, str], method: str = "GET"
) -> requests.Response:
    """Call ``<console>/prom/api/v1/<path>`` as Grafana's Prometheus datasource does: form
    parameters in the query string (GET) or a form-encoded body (POST), the owner's token."""
    url = f"{s.control}/prom/api/v1/{path}"
    headers = {"Authorization": f"Bearer {s.owners[owner]}"}
    if method == "GET":
        return requests.get(url, params=params, headers=headers, timeout=15)
    return requests.post(url, data=params, headers=headers, timeout=15)


def _grafana_params(s: Scenario, t: Target, tenant: str) -> tuple[str, dict[str, str]]:
    """The API path and parameters Grafana sends for ``t`` with ``$tenant`` = ``tenant``."""
    expr = expand_vars(t.query, {"tenant": [tenant]}, {"__rate_interval": WINDOW, "__range": RANGE})
    if t.instant:
        return "query", {"query": expr, "time": f"{s.at:.3f}"}
    return "query_range", {
        "query": expr,
        "start": f"{s.at - 60:.3f}",
        "end": f"{s.at:.3f}",
        "step": "5",
    }


def _series(resp: requests.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    body = resp.json()
    assert body["status"] == "success", body
    return sorted(
        (r for r in body["data"]["result"] if r.get("values") or r.get("value")),
        key=lambda r: sorted(r["metric"].items()),
    )


def _direct(s: Scenario, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    return _series(requests.get(f"{s.prom.base}/api/v1/{path}", params=params, timeout=10))


def test_the_owners_dashboard_reads_metrics_only_through_the_proxy() -> None:
    assert OWNER_TARGETS and OWNER_VARIABLES
    assert {t.datasource for t in OWNER_TARGETS + OWNER_VARIABLES} == {"runledger-tenant-prom"}


@pytest.mark.parametrize("owner", OWNERS)
def test_an_owners_variables_list_only_their_tenant(scenario: Scenario, owner: str) -> None:
    """Grafana (a Prometheus >= 2.24 datasource) fills ``label_values(metric, label)`` from
    the label values API with ``match[]``; older settings use the series API. The
    datasource's "Save & test" health check (an instant ``1+1``) is answered too."""
    health = _proxy(scenario, owner, "query", {"query": "1+1", "time": f"{scenario.at:.3f}"})
    assert health.status_code == 200 and health.json()["data"]["result"][1] == "2", health.text
    for var in OWNER_VARIABLES:
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var.query)
        assert m, var.query
        window = {"start": f"{scenario.at - 600:.0f}", "end": f"{scenario.at:.0f}"}
        resp = _proxy(scenario, owner, f"label/{m[2]}/values", {"match[]": m[1], **window})
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"] == [owner]
        # Without match[] (Grafana's label_values(label)), still only the owner's tenant.
        resp = _proxy(scenario, owner, f"label/{m[2]}/values", window)
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"] == [owner]
        resp = _proxy(scenario, owner, "series", {"match[]": m[1], **window})
        assert resp.status_code == 200, resp.text
        found = resp.json()["data"]
        assert found and {series[m[2]] for series in found} == {owner}


@pytest.mark.parametrize("owner", OWNERS)
@pytest.mark.parametrize("target", OWNER_TARGETS, ids=lambda t: f"{t.panel}:{t.raw['refId']}")
def test_every_owner_panel_runs_through_the_proxy_scoped_to_the_owner(
    scenario: Scenario, target: Target, owner: str
) -> None:
    path, params = _grafana_params(scenario, target, owner)
    rows = _series(_proxy(scenario, owner, path, params))
    if target.panel not in MAY_BE_EMPTY:
        assert rows, f"{target.panel}: no data for {owner} through the proxy: {params['query']}"
    assert {r["metric"].get("tenant", owner) for r in rows} <= {owner}, rows
    # The same answer as Prometheus gives an admin for that tenant, by POST as well.
    assert rows == _direct(scenario, path, params)
    assert _series(_proxy(scenario, owner, path, params, method="POST")) == rows
    # Scoping is the proxy's, not the dashboard's: without its tenant matcher (what an owner
    # could type in Explore), the panel's query still reads only the owner's tenant.
    bare = re.sub(r'\{tenant="[^"]*"\}|tenant="[^"]*",\s*', "", params["query"])
    assert "tenant=" not in bare, bare
    assert _series(_proxy(scenario, owner, path, {**params, "query": bare})) == rows


@pytest.mark.parametrize("target", OWNER_TARGETS, ids=lambda t: f"{t.panel}:{t.raw['refId']}")
def test_another_tenants_panels_are_refused_to_an_owner(scenario: Scenario, target: Target) -> None:
    """Each owner's panel, with ``$tenant`` set to the other owner's tenant, is refused."""
    first, second = OWNERS
    for owner, other in ((first, second), (second, first)):
        path, params = _grafana_params(scenario, target, other)
        resp = _proxy(scenario, owner, path, params)
        assert resp.status_code == 403, (resp.status_code, resp.text)
        assert resp.json()["fields"][0]["field"] == "query", resp.text


def test_the_owners_see_different_figures(scenario: Scenario) -> None:
    """The two owners' Spend today differ and each equals the ledger's figure for the tenant,
    so the scoped answers are not the same data twice."""
    (spend,) = [t for t in OWNER_TARGETS if t.panel == "Spend today"]
    seen = {}
    for owner in OWNERS:
        path, params = _grafana_params(scenario, spend, owner)
        (row,) = _series(_proxy(scenario, owner, path, params))
        seen[owner] = float(row["value"][1])
    with psycopg.connect(scenario.db_url) as conn:
        ledger = dict(
            conn.execute(
                "SELECT tenant_id, sum(spend_usd)::float FROM cap_usage"
                " WHERE date = (now() AT TIME ZONE 'UTC')::date GROUP BY tenant_id"
            ).fetchall()
        )
    assert seen == pytest.approx({o: ledger[o] for o in OWNERS})
    assert seen[OWNERS[0]] != seen[OWNERS[1]]
