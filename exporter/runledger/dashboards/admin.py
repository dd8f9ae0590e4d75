"""Admin Overview (uid ``runledger-admin``): spend, failures, stuck projects, caps, health."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, common, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db

from runledger.dashboards._common import (
    CONSOLE,
    POSTGRES,
    PROMETHEUS,
    Layout,
    Sql,
    base_dashboard,
    cap_thresholds,
    console_data_link,
    console_link,
    dashboard_link,
    label_variable,
    links_override,
    panel,
    prom,
    trace_link,
    unit_override,
    url_link,
)

__all__ = ["UID", "admin_overview"]

UID = "runledger-admin"

SEL = 'tenant=~"$tenant", model=~"$model", phase=~"$phase"'
"""The three filters, for series that carry tenant, model and phase."""
T = 'tenant=~"$tenant"'

STUCK_AFTER_HOURS = 48
"""Matches the exporter's default ``stuck_after_seconds`` (48 h, the spec's stalled phase)."""


def admin_overview() -> db.Dashboard:
    """Build the Admin Overview."""
    lay = Layout()
    d = (
        base_dashboard(
            "runledger — Admin Overview",
            UID,
            "Spend today, the last failures, stuck projects and caps, filtered by tenant, "
            "model and phase; each row links to the console's run, project and tenant pages.",
            ["runledger", "admin"],
            "now-24h",
        )
        .with_variable(label_variable("tenant", "runledger_tenant_daily_cap_usd"))
        .with_variable(label_variable("model", "runledger_cost_usd_total"))
        .with_variable(label_variable("phase", "runledger_phase_advances_total"))
        .links(
            [
                dashboard_link("Tenant Overview", "runledger-tenant", "?${tenant:queryparam}"),
                dashboard_link("Project Overview", "runledger-project", "?${tenant:queryparam}"),
                # Pause, reopen, rerun and cap raises are buttons on the console's pages.
                console_link("Console: admin overview (quick actions)", "/admin"),
                console_link("Export runs (CSV)", "/export"),
            ]
        )
    )

    # -- spend today -----------------------------------------------------------------------
    lay.add(
        panel(
            stat.Panel(),
            "Spend today",
            "Spend of the selected tenants in the current UTC day, from the ledger's "
            "caps (exact, not a rate).",
            PROMETHEUS,
            "currencyUSD",
            prom(f"sum(runledger_tenant_spend_today_usd{{{T}}})", "spend", instant=True),
        ).decimals(2),
        4,
        5,
    )
    lay.add(
        panel(
            stat.Panel(),
            "Projected by end of day",
            "Today's spend plus the last hour's burn rate carried to midnight UTC.",
            PROMETHEUS,
            "currencyUSD",
            prom(
                f"sum(runledger_tenant_projected_spend_today_usd{{{T}}})",
                "projected",
                instant=True,
            ),
        ).decimals(2),
        4,
        5,
    )
    lay.add(
        panel(
            bargauge.Panel(),
            "Today's spend by tenant",
            "Spend per tenant in the current UTC day (ledger caps). Click a bar for "
            "the tenant's console page.",
            PROMETHEUS,
            "currencyUSD",
            prom(
                f"sort_desc(sum by (tenant) (runledger_tenant_spend_today_usd{{{T}}}))",
                "{{tenant}}",
                instant=True,
            ),
        )
        .decimals(2)
        .data_links([console_data_link("Tenant page", "/tenants/${__field.labels.tenant}")]),
        8,
        5,
    )
    lay.add(
        (
            panel(
                bargauge.Panel(),
                "Today's spend by model",
                "Spend of the day so far (UTC) per model, summed from the ledger's events of "
                "today's partition: exact, and cheaper than a day of raw counter samples.",
                POSTGRES,
                "currencyUSD",
                Sql("""
                SELECT COALESCE(model, 'none') AS model, sum(cost_usd) AS spend
                FROM events
                WHERE occurred_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                  AND cost_usd > 0
                  AND tenant_id IN (${tenant:sqlstring})
                  AND phase IN (${phase:sqlstring})
                  AND COALESCE(model, 'none') IN (${model:sqlstring})
                GROUP BY 1
                ORDER BY spend DESC"""),
            )
            .decimals(2)
            .reduce_options(
                common.ReduceDataOptions().values(True).calcs(["lastNotNull"]).fields("/^spend$/")
            )
        ),
        8,
        5,
    )

    # -- failures, stuck projects, caps ----------------------------------------------------
    failures = (
        panel(
            table.Panel(),
            "Last 10 failures",
            "Failed runs and rejected artifacts, latest first, with phase and role. "
            "Links: the console's run page (rerun), the trace in Tempo, and the "
            "project's why-blocked section for the blocking artifact.",
            POSTGRES,
            "none",
            Sql("""
            SELECT f.last_seen AS "time", f.tenant_id AS tenant, f.project_id, f.run_id,
                   f.phase, f.role, f.kind, f.reason, f.artifact_ref, f.count,
                   COALESCE(r.model, 'none') AS model, f.trace_id
            FROM failures f LEFT JOIN runs r USING (run_id)
            WHERE $__timeFilter(f.last_seen)
              AND f.tenant_id IN (${tenant:sqlstring})
              AND f.phase IN (${phase:sqlstring})
              AND COALESCE(r.model, 'none') IN (${model:sqlstring})
            ORDER BY f.last_seen DESC
            LIMIT 10"""),
        )
        .override_by_name(
            "run_id",
            links_override(url_link("Run page (rerun)", CONSOLE + "/runs/${__data.fields.run_id}")),
        )
        .override_by_name("trace_id", links_override(trace_link()))
        .override_by_name(
            "artifact_ref",
            links_override(
                url_link(
                    "Why blocked", CONSOLE + "/projects/${__data.fields.project_id}#why-blocked"
                )
            ),
        )
        .override_by_name(
            "project_id",
            links_override(
                url_link("Project page (reopen)", CONSOLE + "/projects/${__data.fields.project_id}")
            ),
        )
        .override_by_name("count", unit_override("short"))
    )
    lay.add(failures, 24, 9)
    stuck = (
        panel(
            table.Panel(),
            "Top stuck projects",
            f"Projects in a phase for more than {STUCK_AFTER_HOURS} h without "
            "advancing, longest first. Links: why-blocked and the tenant's page.",
            POSTGRES,
            "s",
            Sql(f"""
            SELECT p.project_id, p.tenant_id AS tenant, p.current_phase AS phase,
                   p.phase_entered_at,
                   EXTRACT(EPOCH FROM now() - p.phase_entered_at)::bigint AS in_phase_seconds,
                   (SELECT count(*) FROM failures f WHERE f.project_id = p.project_id
                      AND f.phase = p.current_phase) AS failures
            FROM projects p
            WHERE p.phase_entered_at < now() - interval '{STUCK_AFTER_HOURS} hours'
              AND p.phase_entered_at >= COALESCE(p.last_advanced_at, '-infinity')
              AND p.tenant_id IN (${{tenant:sqlstring}})
              AND p.current_phase IN (${{phase:sqlstring}})
            ORDER BY p.phase_entered_at
            LIMIT 10"""),
        )
        .override_by_name(
            "project_id",
            links_override(
                url_link(
                    "Why blocked", CONSOLE + "/projects/${__data.fields.project_id}#why-blocked"
                )
            ),
        )
        .override_by_name(
            "tenant",
            links_override(url_link("Tenant page", CONSOLE + "/tenants/${__data.fields.tenant}")),
        )
        .override_by_name("failures", unit_override("short"))
        .override_by_name("phase_entered_at", unit_override("dateTimeAsIso"))
    )
    lay.add(stuck, 12, 8)
    caps = (
        panel(
            bargauge.Panel(),
            "Caps approaching",
            "Share of each tenant's daily cap spent today (recorded rule "
            "tenant:runledger_cap_utilisation:ratio); owners are alerted at 80% and "
            "100%. Click a bar to raise the cap (with a reason, audited).",
            PROMETHEUS,
            "percentunit",
            prom(
                f"sort_desc(tenant:runledger_cap_utilisation:ratio{{{T}}})",
                "{{tenant}}",
                instant=True,
            ),
        )
        .min(0)
        .max(1)
        .thresholds(cap_thresholds())
        .data_links(
            [console_data_link("Raise the cap", "/tenants/${__field.labels.tenant}#raise-cap")]
        )
    )
    lay.add(caps, 6, 8)
    lay.add(
        (
            panel(
                stat.Panel(),
                "Cap interventions (1 d)",
                "Caps that stopped spend (cap_hit events) in the last day, per tenant "
                "(recorded rule tenant:runledger_cap_hits:increase1d).",
                PROMETHEUS,
                "short",
                prom(
                    f"sum by (tenant) (tenant:runledger_cap_hits:increase1d{{{T}}})",
                    "{{tenant}}",
                    instant=True,
                ),
            ).data_links([console_data_link("Caps", "/tenants/${__field.labels.tenant}#caps")])
        ),
        6,
        8,
    )
    caps_today = (
        panel(
            table.Panel(),
            "Caps today",
            "Each tenant's cap in force (a temporary raise included, with its expiry), spend, "
            "open lease reservations and whether spend is blocked, from the ledger. Click a "
            "tenant to raise its cap (with a reason, audited) or to pause it.",
            POSTGRES,
            "currencyUSD",
            Sql("""
            SELECT t.tenant_id AS tenant, t.status,
                   cap_effective_usd(t.tenant_id, now()) AS cap_usd,
                   COALESCE(u.spend_usd, 0) AS spend_usd,
                   COALESCE(u.reserved_usd, 0) AS reserved_usd,
                   COALESCE(u.spend_usd, 0)
                     / NULLIF(cap_effective_usd(t.tenant_id, now()), 0) AS utilisation,
                   COALESCE(u.blocked, false) AS blocked,
                   (SELECT max(r.expires_at) FROM cap_raises r
                     WHERE r.tenant_id = t.tenant_id AND r.expires_at > now()
                       AND r.reverted_at IS NULL) AS raise_expires_at
            FROM tenants t
            LEFT JOIN cap_usage u
              ON u.tenant_id = t.tenant_id AND u.date = (now() AT TIME ZONE 'UTC')::date
            WHERE t.tenant_id IN (${tenant:sqlstring})
            ORDER BY utilisation DESC NULLS LAST, t.tenant_id"""),
        )
        .override_by_name(
            "tenant",
            links_override(
                url_link("Raise the cap", CONSOLE + "/tenants/${__data.fields.tenant}#raise-cap"),
                url_link("Pause or resume", CONSOLE + "/tenants/${__data.fields.tenant}"),
            ),
        )
        .override_by_name("utilisation", unit_override("percentunit"))
        .override_by_name("status", unit_override("none"))
        .override_by_name("blocked", unit_override("bool_yes_no"))
        .override_by_name("raise_expires_at", unit_override("dateTimeAsIso"))
    )
    lay.add(caps_today, 24, 7)

    # -- trends ----------------------------------------------------------------------------
    for days in (7, 30):
        lay.add(
            (
                panel(
                    timeseries.Panel(),
                    f"$ per hour, {days} days",
                    "Spend per hour by model (recorded rule "
                    "tenant_model:runledger_cost_usd:increase1h, one point an hour).",
                    PROMETHEUS,
                    "currencyUSD",
                    prom(
                        "sum by (model) ("
                        f'tenant_model:runledger_cost_usd:increase1h{{{T}, model=~"$model"}})',
                        "{{model}}",
                    ),
                )
                .time_from(f"{days}d")
                .interval("1h")
            ),
            12,
            8,
        )
        lay.add(
            (
                panel(
                    timeseries.Panel(),
                    f"Tokens per hour, {days} days",
                    "Input and output tokens per hour (recorded rules "
                    "tenant_model:runledger_{input,output}_tokens:increase1h).",
                    PROMETHEUS,
                    "short",
                    prom(
                        "sum(tenant_model:runledger_input_tokens:increase1h"
                        f'{{{T}, model=~"$model"}})',
                        "input",
                        ref="A",
                    ),
                    prom(
                        "sum(tenant_model:runledger_output_tokens:increase1h"
                        f'{{{T}, model=~"$model"}})',
                        "output",
                        ref="B",
                    ),
                )
                .time_from(f"{days}d")
                .interval("1h")
            ),
            12,
            8,
        )
    lay.add(
        panel(
            timeseries.Panel(),
            "Spend rate by model",
            "Dollars per hour by model. Exemplars (dots) open the trace of the "
            "event that recorded the spend, to follow a spike to its run.",
            PROMETHEUS,
            "currencyUSD",
            prom(
                "sum by (model) ("
                f"rate(runledger_cost_usd_total{{{SEL}}}[$__rate_interval])) * 3600",
                "{{model}}",
                exemplar=True,
            ),
        ),
        12,
        8,
    )

    # -- pipeline health -------------------------------------------------------------------
    lay.add(
        (
            panel(
                timeseries.Panel(),
                "Success rate per phase",
                "Runs that succeeded per run finished, by phase (summed numerators over "
                "summed denominators of tenant_phase_status:runledger_runs_finished:rate5m).",
                PROMETHEUS,
                "percentunit",
                prom(
                    "sum by (phase) (tenant_phase_status:runledger_runs_finished:rate5m"
                    f'{{{T}, phase=~"$phase", status="succeeded"}})'
                    " / sum by (phase) (tenant_phase_status:runledger_runs_finished:rate5m"
                    f'{{{T}, phase=~"$phase"}})',
                    "{{phase}}",
                ),
            )
            .min(0)
            .max(1)
        ),
        12,
        8,
    )
    lay.add(
        panel(
            timeseries.Panel(),
            "Retries per phase",
            "Runs started as a retry per second, by phase (recorded rule "
            "tenant_phase:runledger_run_retries:rate5m).",
            PROMETHEUS,
            "ops",
            prom(
                "sum by (phase) ("
                f'tenant_phase:runledger_run_retries:rate5m{{{T}, phase=~"$phase"}})',
                "{{phase}}",
            ),
        ),
        12,
        8,
    )
    lay.add(
        panel(
            timeseries.Panel(),
            "Queue latency",
            "Time runs waited from run_queued to run_started: mean and 95th "
            "percentile per role. Exemplars open the waiting run's trace.",
            PROMETHEUS,
            "s",
            prom(
                "sum by (role) ("
                f"rate(runledger_queue_wait_seconds_sum{{{T}}}[$__rate_interval]))"
                " / sum by (role) ("
                f"rate(runledger_queue_wait_seconds_count{{{T}}}[$__rate_interval]))",
                "mean {{role}}",
                ref="A",
            ),
            prom(
                "histogram_quantile(0.95, sum by (le, role) ("
                f"rate(runledger_queue_wait_seconds_bucket{{{T}}}[$__rate_interval])))",
                "p95 {{role}}",
                ref="B",
                exemplar=True,
            ),
        ),
        12,
        8,
    )
    lay.add(
        panel(
            stat.Panel(),
            "Alert precision (7 d)",
            "Fired alerts judged true positive per alert judged, over 7 days "
            "(recorded rule "
            ":runledger_alert_judgements_true_positive_per_judged:ratio_rate7d).",
            PROMETHEUS,
            "percentunit",
            prom(
                ":runledger_alert_judgements_true_positive_per_judged:ratio_rate7d",
                "precision",
                instant=True,
            ),
        ),
        6,
        8,
    )
    lay.add(
        panel(
            stat.Panel(),
            "Alerts judged",
            "Fired alerts judged by people in the time range, by outcome (alert_outcomes rows).",
            PROMETHEUS,
            "short",
            prom(
                "sum by (status) (increase(runledger_alert_judgements_total[$__range]))",
                "{{status}}",
                instant=True,
            ),
        ),
        6,
        8,
    )
    return lay.onto(d)
