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
    PROMETHEUS,
    TENANT_PROMETHEUS,
    Layout,
    base_dashboard,
    cap_thresholds,
    console_data_link,
    console_link,
    dashboard_link,
    label_variable,
    panel,
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
        base_dashboard(
            "runledger — Tenant Overview",
            UID,
            "One tenant's time-to-gate, recent ships, costs and projected end of day, proof "
            "completion and active alerts (the owner's banners).",
            ["runledger", "tenant", "owners" if owners else "admin"],
            "now-7d",
        )
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
        lay.add(
            panel(
                stat.Panel(),
                title,
                text,
                src,
                "currencyUSD",
                prom(f"sum({metric}{{{tm}}})", title, instant=True, source=src),
            ).decimals(2),
            5,
            5,
        )
    lay.add(
        (
            panel(
                bargauge.Panel(),
                "Share of the cap spent today",
                "Today's spend over the daily cap (alerts at 80% and 100%). Click to "
                "ask for a raise on the console.",
                src,
                "percentunit",
                prom(
                    f"tenant:runledger_cap_utilisation:ratio{{{tm}}}",
                    "{{tenant}}",
                    instant=True,
                    source=src,
                ),
            )
            .min(0)
            .max(1)
            .thresholds(cap_thresholds())
            .data_links([console_data_link("Caps", "/tenants/${__field.labels.tenant}#caps")])
        ),
        9,
        5,
    )
    lay.add(
        panel(
            timeseries.Panel(),
            "Spend rate",
            "Dollars per hour, by phase. Only dollars and time are shown to owners, "
            "not raw tokens.",
            src,
            "currencyUSD",
            prom(
                f"sum by (phase) (rate(runledger_cost_usd_total{{{tm}}}[$__rate_interval])) * 3600",
                "{{phase}}",
                exemplar=exemplar,
                source=src,
            ),
        ),
        12,
        8,
    )
    lay.add(
        panel(
            timeseries.Panel(),
            "Spend today vs cap",
            "Today's spend, the projection for the end of the day and the cap.",
            src,
            "currencyUSD",
            prom(f"sum(runledger_tenant_spend_today_usd{{{tm}}})", "spent", ref="A", source=src),
            prom(
                f"sum(runledger_tenant_projected_spend_today_usd{{{tm}}})",
                "projected",
                ref="B",
                source=src,
            ),
            prom(f"sum(runledger_tenant_daily_cap_usd{{{tm}}})", "cap", ref="C", source=src),
        ),
        12,
        8,
    )

    # -- progress --------------------------------------------------------------------------
    lay.add(
        panel(
            timeseries.Panel(),
            "Time to gate",
            "Time from entering a phase to passing its gate: daily mean (recorded "
            "rule) and 90th percentile, per phase.",
            src,
            "s",
            prom(
                f"tenant_phase:runledger_phase_time_to_gate_seconds:mean1d{{{tm}}}",
                "mean {{phase}}",
                ref="A",
                source=src,
            ),
            prom(
                "histogram_quantile(0.9, sum by (le, phase) (rate("
                f"runledger_phase_time_to_gate_seconds_bucket{{{tm}}}[$__rate_interval])))",
                "p90 {{phase}}",
                ref="B",
                exemplar=exemplar,
                source=src,
            ),
        ),
        12,
        8,
    )
    lay.add(
        (
            panel(
                timeseries.Panel(),
                "Recent ships",
                "Publisher runs done per hour, by playbook and status (complete or partial), "
                "from the recorded rule tenant_playbook_status:runledger_publishes:increase1h.",
                src,
                "short",
                prom(
                    "sum by (playbook, status) ("
                    f"tenant_playbook_status:runledger_publishes:increase1h{{{tm}}})",
                    "{{playbook}} {{status}}",
                    source=src,
                ),
            )
            .interval("1h")
            .draw_style(cm.GraphDrawStyle.BARS)
            .fill_opacity(80)
        ),
        12,
        8,
    )
    lay.add(
        panel(
            stat.Panel(),
            "Proof completion (1 d)",
            "Proofs answered per proof requested over a day (recorded rule "
            "tenant:runledger_proofs_completed_per_requested:ratio_rate1d).",
            src,
            "percentunit",
            prom(
                f"tenant:runledger_proofs_completed_per_requested:ratio_rate1d{{{tm}}}",
                "{{tenant}}",
                instant=True,
                source=src,
            ),
        ),
        6,
        6,
    )
    lay.add(
        panel(
            stat.Panel(),
            "Proofs overdue",
            "Proofs past their due time without an answer.",
            src,
            "short",
            prom(f"sum(runledger_proofs_overdue{{{tm}}})", "overdue", instant=True, source=src),
        ),
        6,
        6,
    )
    lay.add(
        (
            panel(
                stat.Panel(),
                "Active alerts (banners)",
                "Owner alerts firing now; each shows as a banner on the console's tenant "
                "page, where it can be muted.",
                src,
                "short",
                prom(
                    "count by (tenant, alertname) ("
                    f'ALERTS{{{tm}, alertstate="firing", audience="owner"}})',
                    "{{alertname}}",
                    instant=True,
                    source=src,
                ),
            ).data_links(
                [console_data_link("Banners", "/tenants/${__field.labels.tenant}#banners")]
            )
        ),
        12,
        6,
    )
    return lay.onto(d)
