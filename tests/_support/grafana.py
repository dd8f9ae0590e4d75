"""Read the generated dashboards: their targets, links and datasources, and expand Grafana's
template variables and SQL macros the way Grafana does, so the queries run on real backends."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from _support import ROOT

GRAFANA = ROOT / "grafana"
GRAMMAR_DIR = ROOT / "tools" / "grammar"
ORG_DASHBOARDS = {1: GRAFANA / "dashboards", 2: GRAFANA / "owners" / "dashboards"}
ORG_DATASOURCES = {
    1: GRAFANA / "provisioning" / "datasources" / "runledger.yml",
    2: GRAFANA / "owners" / "provisioning" / "datasources" / "owners.yml",
}

__all__ = [
    "GRAFANA",
    "ORG_DASHBOARDS",
    "ORG_DATASOURCES",
    "Target",
    "committed",
    "datasources",
    "expand_sql",
    "expand_vars",
    "links",
    "parse_grammar",
    "targets",
]


@dataclass(frozen=True)
class Target:
    """One query of one panel (or of a template variable)."""

    file: str
    panel: str
    panel_type: str
    datasource: str
    query: str
    instant: bool
    raw: dict[str, Any]


def committed() -> dict[str, dict[str, Any]]:
    """Every committed dashboard, by its path under grafana/."""
    out = {}
    for folder in ORG_DASHBOARDS.values():
        for path in sorted(folder.glob("*.json")):
            out[str(path.relative_to(GRAFANA))] = json.loads(path.read_text())
    return out


def org_of(name: str) -> int:
    return 2 if name.startswith("owners/") else 1


def datasources(org: int) -> dict[str, dict[str, Any]]:
    """The provisioned datasources of an organisation, by uid."""
    config = yaml.safe_load(ORG_DATASOURCES[org].read_text())
    return {d["uid"]: d for d in config["datasources"] if d.get("orgId", 1) == org}


def _query_of(target: dict[str, Any], kind: str) -> str:
    if kind == "grafana-postgresql-datasource":
        return str(target["rawSql"])
    if kind == "tempo":
        return str(target["query"])
    return str(target["expr"])


def targets(dashboards: dict[str, dict[str, Any]]) -> Iterator[Target]:
    """Every panel target and every query variable of ``dashboards``."""
    for name, model in dashboards.items():
        for panel in model["panels"]:
            for t in panel.get("targets", []):
                source = t.get("datasource") or panel["datasource"]
                yield Target(
                    name,
                    panel["title"],
                    panel["type"],
                    source["uid"],
                    _query_of(t, source["type"]),
                    bool(t.get("instant")),
                    t,
                )
        for var in model["templating"]["list"]:
            if var["type"] == "query":
                source = var["datasource"]
                yield Target(
                    name,
                    f"variable {var['name']}",
                    "variable",
                    source["uid"],
                    str(var["query"]),
                    True,
                    var,
                )


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def links(model: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every link of a dashboard (dashboard, panel and data links), with where it is."""
    for link in model.get("links", []):
        yield "dashboard links", link
    for panel in model["panels"]:
        for node in _walk(panel):
            if (
                "url" in node
                and "title" in node
                and ("internal" in node or "targetBlank" in node or "type" in node)
            ):
                yield panel["title"], node


def _prom_regex_escape(value: str) -> str:
    """Escape regex metacharacters as Grafana's Prometheus datasource does (doubled, for a
    PromQL string)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def expand_vars(text: str, values: dict[str, list[str]], builtins: dict[str, str]) -> str:
    """Substitute template variables as Grafana does: ``$x`` and ``${x}`` of a multi-value
    variable become a regex alternation ``(a|b)`` (what Prometheus' ``=~`` gets);
    ``${x:sqlstring}`` quoted SQL strings; ``${x:queryparam}`` URL parameters. Unknown
    variables fail."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name in builtins:
            return builtins[name]
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {text!r}")
        vals = values[name]
        if fmt == "sqlstring":
            return ",".join("'" + v.replace("'", "''") + "'" for v in vals)
        if fmt == "queryparam":
            return "&".join(f"var-{name}={v}" for v in vals)
        if fmt is not None:
            raise KeyError(f"format {fmt} of ${name} is not expanded by this test")
        if len(vals) == 1:
            return vals[0]
        return "(" + "|".join(_prom_regex_escape(v) for v in vals) + ")"

    return VAR_RE.sub(sub, text)


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([smhd])", duration)
    assert m, f"unsupported interval {duration!r}"
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def expand_sql(
    sql: str, values: dict[str, list[str]], start: datetime, end: datetime, interval: str
) -> str:
    """Expand the PostgreSQL datasource's macros as Grafana 11 does (``$__timeFilter``,
    ``$__timeFrom``, ``$__timeTo``, ``$__timeGroupAlias``) and the template variables.
    Any other ``$__`` macro fails, so a new one cannot go untested."""
    frm = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    to = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    sql = sql.replace("$__interval", interval)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{frm}' AND '{to}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{frm}'").replace("$__timeTo()", f"'{to}'")

    def group(m: re.Match[str]) -> str:
        column, step = (part.strip() for part in m.group(1).split(","))
        n = _seconds(step)
        return f'floor(extract(epoch from {column})/{n})*{n} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^)]+)\)", group, sql)
    leftover = re.findall(r"\$__\w+", sql)
    assert not leftover, f"macros this test does not expand: {leftover}"
    return expand_vars(sql, values, {})


def parse_grammar(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Parse (language, query) pairs with Grafana's lezer grammars under Node."""
    assert (GRAMMAR_DIR / "node_modules" / "@grafana").is_dir(), (
        "tools/grammar is not installed: `make grammar` (npm ci) installs it"
    )
    payload = json.dumps([{"language": lang, "query": q} for lang, q in queries])
    out = subprocess.run(
        ["node", "parse.mjs"],
        cwd=GRAMMAR_DIR,
        input=payload,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))
