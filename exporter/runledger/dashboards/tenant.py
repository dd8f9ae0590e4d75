"""Tenant Overview (uid ``runledger-tenant``): what an owner needs about one tenant.

Built twice from the same code: for the admins' organisation (datasource ``prometheus``)
and for an owners' organisation, whose only metrics datasource is the console's
tenant-enforcing query proxy (``runledger-tenant-prom``): every selector it forwards gets
the owner's tenant matcher, so an owner cannot widen the ``tenant`` variable to see another
tenant. The owners' build has no PostgreSQL panel (a SQL datasource is not tenant-scoped)
and no exemplar queries (the proxy forwards only the query, series and label APIs). Its
``tenant`` variable is single-valued and every selector matches it exactly
(``tenant="$tenant"``): the proxy refuses any other tenant matcher (``=~`` included), and the
variable lists only the owner's tenant.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from runledger.dashboards._common import (
    CONSOLE,
    PROMETHEUS,
    TENANT_PROMETHEUS,
    Layout,
    console_link,
    console_variable,
    dashboard_link,
    label_variable,
    prom,
)

__all__ = ["UID", "tenant_overview"]

UID = "runledger-tenant"


def tenant_overview(*, owners: bool = False) -> db.Dashboard:
    """Build the Tenant Overview; ``owners`` selects the owners' organisation's build."""
    src = TENANT_PROMETHEUS if owners else PROMETHEUS
    tm = 'tenant="$tenant"' if owners else 'tenant=~"$tenant"'
    exemplar = not owners
    lay = Layout()
    links: list[cogbuilder.Builder[dm.DashboardLink]] = [
        console_link("Tenant page (caps, banners, muting)", "/tenants/${tenant}"),
        console_link("Console home", "/"),
    ]
    if not owners:
        links.insert(
            0, dashboard_link("Admin Overview", "runledger-admin", "?${tenant:queryparam}")
        )
        links.insert(
            1, dashboard_link("Project Overview", "runledger-project", "?${tenant:queryparam}")
        )
    d = (
        db.Dashboard("runledger — Tenant Overview")
        .uid(UID)
        .description(
            "One tenant's time-to-gate, recent ships, costs and projected end of day, proof "
            "completion and active alerts (the owner's banners)."
        )
        .tags(["runledger", "tenant", "owners" if owners else "admin"])
        .editable()
        .timezone("utc")
        .time("now-7d", "now")
        .refresh("1m")
        .with_variable(console_variable())
        .with_variable(
            label_variable("tenant", "runledger_tenant_daily_cap_usd", src, single=owners)
        )
        .links(links)
    )

    # -- costs -----------------------------------------------------------------------------
    cost_panels = (
        (
            "Spend today",
            "runledger_tenant_spend_today_usd",
            "Spend in the current UTC day, from the ledger.",
        ),
        (
            "Projected by end of day",
            "runledger_tenant_projected_spend_today_usd",
            "Today's spend plus the last hour's burn rate carried to midnight UTC.",
        ),
        (
            "Daily cap",
            "runledger_tenant_daily_cap_usd",
            "The daily cap in force today; spend stops when it is reached.",
        ),
    )
    for title, metric, text in cost_panels:
        d = d.with_panel(
            lay.place(
                stat.Panel()
                .title(title)
                .description(text)
                .datasource(src)
                .unit("currencyUSD")
                .decimals(2)
                .with_target(prom(f"sum({metric}{{{tm}}})", title, instant=True, source=src)),
                5,
                5,
            )
        )
    d = d.with_panel(
        lay.place(
            bargauge.Panel()
            .title("Share of the cap spent today")
            .description(
                "Today's spend over the daily cap (alerts at 80% and 100%). Click to "
                "ask for a raise on the console."
            )
            .datasource(src)
            .unit("percentunit")
            .min(0)
            .max(1)
            .thresholds(
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
            .data_links(
                [db.DashboardLink("Caps").url(CONSOLE + "/tenants/${__field.labels.tenant}#caps")]
            )
            .with_target(
                prom(
                    f"tenant:runledger_cap_utilisation:ratio{{{tm}}}",
                    "{{tenant}}",
                    instant=True,
                    source=src,
                )
            ),
            9,
            5,
        )
    )
    d = d.with_panel(
        lay.place(
            timeseries.Panel()
            .title("Spend rate")
            .description(
                "Dollars per hour, by phase. Only dollars and time are shown to owners, "
                "not raw tokens."
            )
            .datasource(src)
            .unit("currencyUSD")
            .with_target(
                prom(
                    "sum by (phase) ("
                    f"rate(runledger_cost_usd_total{{{tm}}}[$__rate_interval])) * 3600",
                    "{{phase}}",
                    exemplar=exemplar,
                    source=src,
                )
            ),
            12,
            8,
        )
    )
    d = d.with_panel(
        lay.place(
            timeseries.Panel()
            .title("Spend today vs cap")
            .description("Today's spend, the projection for the end of the day and the cap.")
            .datasource(src)
            .unit("currencyUSD")
            .with_target(
                prom(f"sum(runledger_tenant_spend_today_usd{{{tm}}})", "spent", ref="A", source=src)
            )
            .with_target(
                prom(
                    f"sum(runledger_tenant_projected_spend_today_usd{{{tm}}})",
                    "projected",
                    ref="B",
                    source=src,
                )
            )
            .with_target(
                prom(f"sum(runledger_tenant_daily_cap_usd{{{tm}}})", "cap", ref="C", source=src)
            ),
            12,
            8,
        )
    )

    # -- progress --------------------------------------------------------------------------
    d = d.with_panel(
        lay.place(
            timeseries.Panel()
            .title("Time to gate")
            .description(
                "Time from entering a phase to passing its gate: daily mean (recorded "
                "rule) and 90th percentile, per phase."
            )
            .datasource(src)
            .unit("s")
            .with_target(
                prom(
                    f"tenant_phase:runledger_phase_time_to_gate_seconds:mean1d{{{tm}}}",
                    "mean {{phase}}",
                    ref="A",
                    source=src,
                )
            )
            .with_target(
                prom(
                    "histogram_quantile(0.9, sum by (le, phase) (rate("
                    f"runledger_phase_time_to_gate_seconds_bucket{{{tm}}}[$__rate_interval])))",
                    "p90 {{phase}}",
                    ref="B",
                    exemplar=exemplar,
                    source=src,
                )
            ),
            12,
            8,
        )
    )
    d = d.with_panel(
        lay.place(
            timeseries.Panel()
            .title("Recent ships")
            .description(
                "Publisher runs done per hour, by playbook and status (complete or partial), "
                "from the recorded rule tenant_playbook_status:runledger_publishes:increase1h."
            )
            .datasource(src)
            .interval("1h")
            .unit("short")
            .draw_style(cm.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .with_target(
                prom(
                    "sum by (playbook, status) ("
                    f"tenant_playbook_status:runledger_publishes:increase1h{{{tm}}})",
                    "{{playbook}} {{status}}",
                    source=src,
                )
            ),
            12,
            8,
        )
    )
    d = d.with_panel(
        lay.place(
            stat.Panel()
            .title("Proof completion (1 d)")
            .description(
                "Proofs answered per proof requested over a day (recorded rule "
                "tenant:runledger_proofs_completed_per_requested:ratio_rate1d)."
            )
            .datasource(src)
            .unit("percentunit")
            .with_target(
                prom(
                    f"tenant:runledger_proofs_completed_per_requested:ratio_rate1d{{{tm}}}",
                    "{{tenant}}",
                    instant=True,
                    source=src,
                )
            ),
            6,
            6,
        )
    )
    d = d.with_panel(
        lay.place(
            stat.Panel()
            .title("Proofs overdue")
            .description("Proofs past their due time without an answer.")
            .datasource(src)
            .unit("short")
            .with_target(
                prom(f"sum(runledger_proofs_overdue{{{tm}}})", "overdue", instant=True, source=src)
            ),
            6,
            6,
        )
    )
    d = d.with_panel(
        lay.place(
            stat.Panel()
            .title("Active alerts (banners)")
            .description(
                "Owner alerts firing now; each shows as a banner on the console's tenant "
                "page, where it can be muted."
            )
            .datasource(src)
            .unit("short")
            .data_links(
                [
                    db.DashboardLink("Banners").url(
                        CONSOLE + "/tenants/${__field.labels.tenant}#banners"
                    )
                ]
            )
            .with_target(
                prom(
                    "count by (tenant, alertname) ("
                    f'ALERTS{{{tm}, alertstate="firing", audience="owner"}})',
                    "{{alertname}}",
                    instant=True,
                    source=src,
                )
            ),
            12,
            6,
        )
    )
    return d
