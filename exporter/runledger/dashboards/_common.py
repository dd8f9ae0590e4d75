"""Shared pieces of the dashboards: datasource refs, query builders, panel helpers, links."""

from __future__ import annotations

from typing import Any, Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import loki, prometheus, tempo
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

__all__ = [
    "CONSOLE",
    "CONSOLE_ROUTES",
    "DEFAULT_CONSOLE_URL",
    "LOKI",
    "POSTGRES",
    "PROMETHEUS",
    "TEMPO",
    "TENANT_PROMETHEUS",
    "Sql",
    "base_dashboard",
    "cap_thresholds",
    "console_data_link",
    "console_link",
    "dashboard_link",
    "logql",
    "panel",
    "prom",
    "traceql",
    "unit_override",
]

PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="prometheus")
TENANT_PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="runledger-tenant-prom")
"""The console's tenant-enforcing query proxy (``<control>/prom``), owners' organisation only."""
POSTGRES = dm.DataSourceRef(type_val="grafana-postgresql-datasource", uid="postgres")
LOKI = dm.DataSourceRef(type_val="loki", uid="loki")
TEMPO = dm.DataSourceRef(type_val="tempo", uid="tempo")

DEFAULT_CONSOLE_URL = "http://localhost:8480"
"""Where browsers reach the console when ``RUNLEDGER_CONSOLE_URL`` is unset."""
CONSOLE = "${console}"
"""The dashboards' hidden ``console`` variable: the console's base URL."""

CONSOLE_ROUTES: dict[str, str] = {
    "home": "/",
    "admin": "/admin",
    "tenant": "/tenants/<tenant_id>",
    "project": "/projects/<project_id>",
    "run": "/runs/<run_id>",
    "export": "/export",
}
"""Every console page the dashboards link to (Flask rule syntax). The one list the link
check compares with the control service's URL map."""


def console_link(title: str, path: str, tooltip: str = "") -> db.DashboardLink:
    """A link to a console page, ``path`` after the console's base URL."""
    return (
        db.DashboardLink(title)
        .type(dm.DashboardLinkType.LINK)
        .url(CONSOLE + path)
        .tooltip(tooltip or title)
        .target_blank(True)
    )


def dashboard_link(title: str, uid: str, query: str = "") -> db.DashboardLink:
    """A link to another runledger dashboard by uid, keeping the time range."""
    return (
        db.DashboardLink(title)
        .type(dm.DashboardLinkType.LINK)
        .url(f"/d/{uid}{query}")
        .tooltip(title)
        .keep_time(True)
    )


def prom(
    expr: str,
    legend: str = "",
    *,
    ref: str = "A",
    instant: bool = False,
    exemplar: bool = False,
    source: dm.DataSourceRef = PROMETHEUS,
    table: bool = False,
) -> prometheus.Dataquery:
    """A PromQL target in code mode."""
    q = (
        prometheus.Dataquery()
        .expr(expr)
        .ref_id(ref)
        .datasource(source)
        .editor_mode(pm.QueryEditorMode.CODE)
    )
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table:
        q = q.format(pm.PromQueryFormat.TABLE)
    if exemplar:
        q = q.exemplar(True)
    return q


def logql(expr: str, ref: str = "A") -> loki.Dataquery:
    """A LogQL target."""
    return loki.Dataquery().expr(expr).ref_id(ref).datasource(LOKI)


def traceql(query: str, ref: str = "A", limit: int = 20) -> tempo.TempoQuery:
    """A TraceQL search target."""
    return (
        tempo.TempoQuery()
        .query(query)
        .query_type("traceql")
        .ref_id(ref)
        .limit(limit)
        .datasource(TEMPO)
    )


class SqlQueryModel(cogvariants.Dataquery):
    """A PostgreSQL target (the SDK has no builder for the SQL datasources)."""

    def __init__(self, raw_sql: str, fmt: str, ref_id: str) -> None:
        self.raw_sql = raw_sql
        self.fmt = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": POSTGRES.to_json(),
            "editorMode": "code",
            "format": self.fmt,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[SqlQueryModel]):
    """Builder of a PostgreSQL target; ``fmt`` is ``table`` or ``time_series``."""

    def __init__(self, raw_sql: str, fmt: str = "table", ref: str = "A") -> None:
        self._model = SqlQueryModel(" ".join(raw_sql.split()), fmt, ref)

    def ref_id(self, ref: str) -> Self:
        self._model.ref_id = ref
        return self

    def build(self) -> SqlQueryModel:
        return self._model


def trace_link(field: str = "trace_id") -> dict[str, Any]:
    """A data link opening the trace whose id is the field's value in Tempo (Explore)."""
    return {
        "title": "Trace",
        "url": "",
        "internal": {
            "datasourceUid": TEMPO.uid,
            "datasourceName": "Tempo",
            "query": {"queryType": "traceql", "query": f"${{__data.fields.{field}}}"},
        },
    }


def links_override(*links: dict[str, Any]) -> list[dm.DynamicConfigValue]:
    """Override properties that put ``links`` on one field."""
    return [dm.DynamicConfigValue(id_val="links", value=list(links))]


def url_link(title: str, url: str) -> dict[str, Any]:
    """A data link to ``url`` (console pages: ``CONSOLE`` + path)."""
    return {"title": title, "url": url, "targetBlank": url.startswith(CONSOLE)}


def unit_override(unit: str) -> list[dm.DynamicConfigValue]:
    """Override properties that set one field's ``unit``."""
    return [dm.DynamicConfigValue(id_val="unit", value=unit)]


def console_data_link(title: str, path: str) -> db.DashboardLink:
    """A panel data link to a console page, ``path`` after the console's base URL."""
    return db.DashboardLink(title).url(CONSOLE + path)


def cap_thresholds() -> db.ThresholdsConfig:
    """Green below 80% of a cap, orange from 80%, red from 100% (the cap alerts' levels)."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dm.Threshold(color="green"),
                dm.Threshold(value=0.8, color="orange"),
                dm.Threshold(value=1.0, color="red"),
            ]
        )
    )


class PanelBuilder(Protocol):
    """What every panel builder of the SDK has (stat, bargauge, table, timeseries, ...)."""

    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: dm.DataSourceRef) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def with_target(self, target: cogbuilder.Builder[cogvariants.Dataquery]) -> Self: ...


PanelT = TypeVar("PanelT", bound=PanelBuilder)


def panel(
    builder: PanelT,
    title: str,
    description: str,
    source: dm.DataSourceRef,
    unit: str,
    *targets: cogbuilder.Builder[cogvariants.Dataquery],
) -> PanelT:
    """``builder`` with its title, description, datasource, unit and targets (in order)."""
    p = builder.title(title).description(description).datasource(source).unit(unit)
    for target in targets:
        p = p.with_target(target)
    return p


def base_dashboard(
    title: str, uid: str, description: str, tags: list[str], time_from: str
) -> db.Dashboard:
    """A runledger dashboard: editable, UTC, refreshed every minute, up to now, with the
    hidden ``console`` variable first."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(tags)
        .editable()
        .timezone("utc")
        .time(time_from, "now")
        .refresh("1m")
        .with_variable(console_variable())
    )


def grid(x: int, y: int, w: int, h: int) -> dm.GridPos:
    return dm.GridPos(h=h, w=w, x=x, y=y)


class Layout:
    """Place panels left to right in rows of 24 columns, giving each a stable id; ``onto``
    adds them to a dashboard in the order they were placed."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1
        self.panels: list[Any] = []

    def add(self, panel: Any, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.panels.append(panel.grid_pos(grid(self.x, self.y, w, h)).id(self.next_id))
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)

    def onto(self, dashboard: db.Dashboard) -> db.Dashboard:
        for panel in self.panels:
            dashboard = dashboard.with_panel(panel)
        return dashboard


def console_variable() -> db.ConstantVariable:
    """The hidden ``console`` variable (base URL of the console's pages)."""
    return db.ConstantVariable("console").label("Console URL").value(DEFAULT_CONSOLE_URL)


def label_variable(
    name: str,
    metric: str,
    source: dm.DataSourceRef = PROMETHEUS,
    label: str = "",
    *,
    single: bool = False,
) -> db.QueryVariable:
    """A multi-value variable over the values of label ``name`` of ``metric`` (All included);
    ``single``: one value, no All (for an exact ``name="$name"`` matcher)."""
    var = (
        db.QueryVariable(name)
        .label(label or name.capitalize())
        .datasource(source)
        .query(f"label_values({metric}, {name})")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )
    if single:
        return var.multi(False).include_all(False)
    return (
        var.multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )
