"""The generated dashboards: committed JSON is current, every panel passes the lint rules
that matter, every link resolves, every datasource exists, LogQL and TraceQL parse."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from werkzeug.routing import Map, Rule

from _support import ROOT
from _support.grafana import (
    GRAFANA,
    committed,
    datasources,
    expand_vars,
    links,
    org_of,
    parse_grammar,
    targets,
)
from runledger.dashboards import CONSOLE_ROUTES, DEFAULT_CONSOLE_URL, build, render

BUILT = build()
UIDS = {"runledger-admin", "runledger-tenant", "runledger-project"}
ANCHORS = {
    "/tenants/<tenant_id>": {"caps", "raise-cap", "banners", "muting"},
    "/projects/<project_id>": {"why-blocked"},
}
"""The anchors the console pages have (the contract with the console)."""


def test_committed_json_is_what_the_code_builds() -> None:
    stale = [n for n, m in BUILT.items() if (GRAFANA / n).read_text() != render(m)]
    assert not stale, f"run `runledger dashboards build`: {stale} are out of date"
    assert set(committed()) == set(BUILT), "a committed dashboard no longer comes from code"


def test_dashboards_have_the_agreed_stable_uids() -> None:
    by_org: dict[int, set[str]] = {1: set(), 2: set()}
    for name, model in BUILT.items():
        by_org[org_of(name)].add(model["uid"])
    assert by_org == {1: UIDS, 2: {"runledger-tenant"}}


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(n, p) for n, m in BUILT.items() for p in m["panels"]]


@pytest.mark.parametrize(
    ("name", "panel"), _panels(), ids=lambda v: v if isinstance(v, str) else v["title"]
)
def test_every_panel_has_title_description_unit_and_a_datasource_by_uid(
    name: str, panel: dict[str, Any]
) -> None:
    assert panel["title"] and len(panel["description"]) > 20
    assert panel["fieldConfig"]["defaults"].get("unit"), "units on every panel"
    assert set(panel["datasource"]) == {"type", "uid"}
    for t in panel["targets"]:
        assert set(t["datasource"]) == {"type", "uid"}


def test_panel_ids_are_unique_and_stable() -> None:
    for name, model in BUILT.items():
        ids = [p["id"] for p in model["panels"]]
        assert ids == list(range(1, len(ids) + 1)), name


def test_every_datasource_uid_used_exists_in_that_organisations_provisioning() -> None:
    for name, model in BUILT.items():
        provisioned = datasources(org_of(name))
        used = {t.datasource for t in targets({name: model})}
        for _, link in links(model):
            if "internal" in link:
                used.add(link["internal"]["datasourceUid"])
        assert used <= set(provisioned), (name, used - set(provisioned))
        for t in targets({name: model}):
            src = t.raw.get("datasource")
            if src:
                assert provisioned[src["uid"]]["type"] == src["type"], (name, t.panel)


def test_owners_see_only_the_tenant_enforcing_proxy() -> None:
    owners = {n: m for n, m in BUILT.items() if org_of(n) == 2}
    used = {t.datasource for t in targets(owners)}
    assert used == {"runledger-tenant-prom"}
    source = datasources(2)["runledger-tenant-prom"]
    assert source["url"].endswith("/prom")
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Bearer ${RUNLEDGER_GRAFANA_OWNER_TOKEN}"
    assert source["jsonData"]["httpMethod"] == "GET"
    assert not any(t.raw.get("exemplar") for t in targets(owners)), "the proxy has no exemplar API"


RULES = {
    r["record"]
    for path in (ROOT / "prometheus" / "rules").glob("*.rules.yml")
    for g in yaml.safe_load(path.read_text())["groups"]
    for r in g["rules"]
}
PROM = [
    t
    for t in targets(BUILT)
    if t.datasource in ("prometheus", "runledger-tenant-prom") and t.panel_type != "variable"
]


@pytest.mark.parametrize("target", PROM, ids=lambda t: f"{t.file}:{t.panel}:{t.raw.get('refId')}")
def test_promql_follows_the_rules(target: Any) -> None:
    expr = target.query
    for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr):
        assert window == "$__rate_interval", f"rates use $__rate_interval: {expr}"
    for window in re.findall(r"\bincrease\([^\[]*\[([^\]]+)\]", expr):
        assert window in ("$__rate_interval", "$__range"), expr
    # Counters only inside rate/increase.
    for m in re.finditer(r"\b(\w+_total)\b", expr):
        before = expr[: m.start()]
        assert re.search(r"(rate|increase)\($", before), f"raw counter {m[1]} in {expr}"
    # Recorded series exist (a level:metric:operation name).
    for name in re.findall(r"\b([a-z_]*:[a-z_]+:[a-z0-9_]+)\b", expr):
        assert name in RULES, f"{name} is not a recording rule"
    # Heavy expressions (a day or more of raw samples) come from recording rules.
    assert not re.search(r"\[\d+[dw]\]", expr), expr


def _console_routes() -> Map:
    return Map([Rule(rule, endpoint=name) for name, rule in CONSOLE_ROUTES.items()])


SAMPLE = {"tenant": ["acme"], "model": ["gpt-a"], "phase": ["build"], "project": ["acme-p1"]}
BUILTINS = {"console": DEFAULT_CONSOLE_URL}


def _resolve(url: str) -> str:
    url = re.sub(r"\$\{__(data\.fields|field\.labels)\.(\w+)\}", r"sample-\2", url)
    return expand_vars(url, SAMPLE, BUILTINS)


def test_every_link_resolves_to_a_console_route_or_a_dashboard() -> None:
    adapter = _console_routes().bind("console")
    seen = set()
    for name, model in BUILT.items():
        for where, link in links(model):
            if "internal" in link:
                assert link["internal"]["query"]["query"].startswith("${__data.fields.")
                continue
            url = _resolve(link["url"])
            parts = urlsplit(url)
            if url.startswith("/d/"):
                uid = parts.path.removeprefix("/d/")
                assert uid in UIDS, (name, where, url)
                assert org_of(name) == 1 or uid == "runledger-tenant", (name, url)
                for key in re.findall(r"var-(\w+)=", parts.query):
                    target = next(m for m in BUILT.values() if m["uid"] == uid)
                    assert key in {v["name"] for v in target["templating"]["list"]}, url
                continue
            assert url.startswith(DEFAULT_CONSOLE_URL + "/") or url == DEFAULT_CONSOLE_URL + "/", (
                name,
                where,
                url,
            )
            endpoint, _ = adapter.match(parts.path, method="GET")
            rule = CONSOLE_ROUTES[endpoint]
            if parts.fragment:
                assert parts.fragment in ANCHORS.get(rule, set()), (name, where, url)
            seen.add(endpoint)
    assert seen == set(CONSOLE_ROUTES), (
        f"routes listed but never linked: {set(CONSOLE_ROUTES) - seen}"
    )


def test_the_console_serves_every_route_the_dashboards_link_to(app: Any) -> None:
    """Compared with the control service's URL map: passes once the console is built."""
    from werkzeug.exceptions import HTTPException

    adapter = app.url_map.bind("console")
    missing = []
    for rule in CONSOLE_ROUTES.values():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"sample-\1", rule)
        try:
            adapter.match(path, method="GET")
        except HTTPException:
            missing.append(rule)
    assert not missing, f"console routes the dashboards link to but the app lacks: {missing}"


def _grammar_queries() -> list[tuple[str, str, str]]:
    out = []
    for t in targets(BUILT):
        if t.datasource in ("loki", "tempo"):
            lang = "logql" if t.datasource == "loki" else "traceql"
            out.append((f"{t.file}: {t.panel}", lang, expand_vars(t.query, SAMPLE, {})))
    tempo = datasources(1)["tempo"]["jsonData"]["tracesToLogsV2"]
    tags = ", ".join(f'{tag["value"]}="runledger-demo"' for tag in tempo["tags"])
    query = (
        tempo["query"]
        .replace("$${__tags}", tags)
        .replace("$${__trace.traceId}", "4bf92f3577b34da6a3ce929d0e0e4736")
    )
    out.append(("Tempo tracesToLogsV2 query", "logql", query))
    return out


def test_logql_and_traceql_parse_with_grafanas_grammars() -> None:
    queries = _grammar_queries()
    assert {lang for _, lang, _ in queries} == {"logql", "traceql"}
    results = parse_grammar([(lang, q) for _, lang, q in queries])
    bad = [
        (where, r["query"], r["errors"])
        for (where, _, _), r in zip(queries, results, strict=True)
        if r["errors"]
    ]
    assert not bad, bad


def test_the_grammar_check_catches_a_broken_query() -> None:
    results = parse_grammar(
        [
            ("logql", '{service_name="x"} | trace_id = '),
            ("traceql", "{ span.runledger.project_id = }"),
        ]
    )
    assert all(r["errors"] for r in results)


def test_exemplars_link_to_tempo_by_the_label_the_exporter_writes() -> None:
    from runledger.exporter._tailer import _exemplar

    (dest,) = datasources(1)["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert dest == {"name": "trace_id", "datasourceUid": "tempo"}
    assert set(_exemplar("4bf92f3577b34da6a3ce929d0e0e4736") or {}) == {"trace_id"}


def test_loki_links_trace_ids_to_tempo_and_run_ids_to_the_console() -> None:
    fields = {f["name"]: f for f in datasources(1)["loki"]["jsonData"]["derivedFields"]}
    assert fields["trace_id"]["datasourceUid"] == "tempo"
    assert fields["trace_id"]["matcherType"] == "label"
    run = fields["run_id"]
    assert run["matcherRegex"] == "runledger_run_id"  # OTLP's runledger.run_id in Loki
    assert run["url"] == "${RUNLEDGER_CONSOLE_URL}/runs/$${__value.raw}"
    rule = CONSOLE_ROUTES["run"]
    assert _console_routes().bind("c").match(rule.replace("<run_id>", "r1"))[0] == "run"


def test_build_check_names_stale_files_and_build_writes_them(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from runledger.cli import main

    runner = CliRunner()
    stale = runner.invoke(main, ["dashboards", "build", "--check", "--out", str(tmp_path)])
    assert stale.exit_code == 1
    assert "out of date: dashboards/admin-overview.json" in stale.output
    assert "run `runledger dashboards build`" in stale.output
    url = "https://console.example.test"
    wrote = runner.invoke(main, ["dashboards", "build", "--out", str(tmp_path),
                                 "--console-url", url + "/"])  # fmt: skip
    assert wrote.exit_code == 0, wrote.output
    assert wrote.output.count("wrote ") == len(BUILT)
    ok = runner.invoke(main, ["dashboards", "build", "--check", "--out", str(tmp_path),
                              "--console-url", url])  # fmt: skip
    assert ok.exit_code == 0 and "up to date" in ok.output
    model = json.loads((tmp_path / "dashboards" / "admin-overview.json").read_text())
    (console,) = [v for v in model["templating"]["list"] if v["name"] == "console"]
    assert console["query"] == url and console["hide"] == 2
