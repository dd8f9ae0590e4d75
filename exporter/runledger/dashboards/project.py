"""Project Overview (uid ``runledger-project``): one project's story, from the ledger."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, logs, stat, statetimeline, table
from grafana_foundation_sdk.models import dashboard as dm

from runledger.dashboards._common import (
    CONSOLE,
    LOKI,
    POSTGRES,
    TEMPO,
    Layout,
    Sql,
    base_dashboard,
    console_link,
    dashboard_link,
    label_variable,
    links_override,
    logql,
    panel,
    trace_link,
    traceql,
    unit_override,
    url_link,
)

__all__ = ["UID", "project_overview"]

UID = "runledger-project"
P = "${project:sqlstring}"


def project_overview() -> db.Dashboard:
    """Build the Project Overview."""
    lay = Layout()
    project_var = (
        db.QueryVariable("project")
        .label("Project")
        .datasource(POSTGRES)
        .query(
            "SELECT project_id FROM projects WHERE tenant_id IN (${tenant:sqlstring})"
            " ORDER BY COALESCE(last_advanced_at, phase_entered_at, created_at) DESC"
            " LIMIT 500"
        )
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    d = (
        base_dashboard(
            "runledger — Project Overview",
            UID,
            "One project's story: its phase timeline, artifact versions, open flags "
            "(failures, validation errors, overrides), its runs with their traces and logs, "
            "and the next action.",
            ["runledger", "project"],
            "now-7d",
        )
        .with_variable(label_variable("tenant", "runledger_tenant_daily_cap_usd"))
        .with_variable(project_var)
        .links(
            [
                dashboard_link("Admin Overview", "runledger-admin", "?${tenant:queryparam}"),
                dashboard_link("Tenant Overview", "runledger-tenant", "?${tenant:queryparam}"),
                console_link("Project page (why blocked, reopen)", "/projects/${project}"),
            ]
        )
    )

    lay.add(
        (
            panel(
                table.Panel(),
                "Next action",
                "What unblocks the project now, from the ledger: a paused tenant, a "
                "reached cap, a failed last run, a run in progress or a proof awaiting "
                "approval. Links: why-blocked and the last run's page.",
                POSTGRES,
                "none",
                Sql(f"""
            SELECT p.project_id, p.current_phase AS phase,
              CASE
                WHEN t.status = 'paused'
                  THEN 'Tenant paused: an admin resumes it on the tenant page'
                WHEN c.blocked THEN 'Daily cap reached: raise the cap or wait for the next UTC day'
                WHEN lr.status = 'failed'
                  THEN 'Last run failed (' || COALESCE(lr.error, 'no reason given')
                       || '): rerun it from its run page'
                WHEN lr.status IN ('queued', 'running')
                  THEN 'A ' || lr.role || ' run is ' || lr.status || ': wait for it'
                WHEN EXISTS (SELECT 1 FROM proofs pr
                             WHERE pr.project_id = p.project_id AND pr.completed_at IS NULL)
                  THEN 'A proof awaits the owner''s approval'
                ELSE 'Start the next run of phase ' || COALESCE(p.current_phase, 'intake')
              END AS next_action,
              lr.run_id AS last_run_id, lr.status AS last_run_status
            FROM projects p
            JOIN tenants t USING (tenant_id)
            LEFT JOIN caps c
              ON c.tenant_id = p.tenant_id AND c.date = (now() AT TIME ZONE 'UTC')::date
            LEFT JOIN LATERAL (
              SELECT r.run_id, r.status, r.error, r.role FROM runs r
              WHERE r.project_id = p.project_id ORDER BY r.status_at DESC, r.run_id LIMIT 1
            ) lr ON true
            WHERE p.project_id = {P}"""),
            )
            .override_by_name(
                "project_id",
                links_override(
                    url_link(
                        "Why blocked",
                        CONSOLE + "/projects/${__data.fields.project_id}#why-blocked",
                    )
                ),
            )
            .override_by_name(
                "last_run_id",
                links_override(
                    url_link("Run page (rerun)", CONSOLE + "/runs/${__data.fields.last_run_id}")
                ),
            )
        ),
        18,
        4,
    )
    lay.add(
        (
            panel(
                stat.Panel(),
                "Project spend",
                "Sum of the project's runs' cost, from the ledger.",
                POSTGRES,
                "currencyUSD",
                Sql(f"SELECT COALESCE(sum(cost_usd), 0) AS spend FROM runs WHERE project_id = {P}"),
            ).decimals(3)
        ),
        6,
        4,
    )
    lay.add(
        panel(
            statetimeline.Panel(),
            "Phase timeline",
            "The phase the project was in over time (phase_entered and phase_advanced events).",
            POSTGRES,
            "none",
            Sql(f"""
            SELECT occurred_at AS "time",
                   CASE WHEN type = 'phase_advanced' THEN COALESCE(payload->>'to_phase', 'done')
                        ELSE phase END AS phase
            FROM events
            WHERE project_id = {P} AND type IN ('phase_entered', 'phase_advanced')
              AND $__timeFilter(occurred_at)
            ORDER BY occurred_at, seq"""),
        ),
        24,
        5,
    )
    lay.add(
        (
            panel(
                heatmap.Panel(),
                "Artifact versions",
                "Latest version written of each artifact, per time bucket "
                "(artifact_written events): rows are artifacts, colour is the version.",
                POSTGRES,
                "none",
                Sql(
                    f"""
            SELECT $__timeGroupAlias(occurred_at, $__interval), artifact_path AS metric,
                   max(artifact_version) AS version
            FROM events
            WHERE project_id = {P} AND type = 'artifact_written' AND $__timeFilter(occurred_at)
            GROUP BY 1, 2 ORDER BY 1""",
                    fmt="time_series",
                ),
            ).calculate(False)
        ),
        24,
        7,
    )
    lay.add(
        (
            panel(
                table.Panel(),
                "Flags: failures, validation errors, overrides",
                "Failed runs, rejected artifacts and human overrides of the project, "
                "latest first; open = in the project's current phase. Links: run page, "
                "trace, why-blocked.",
                POSTGRES,
                "none",
                Sql(f"""
            SELECT f.last_seen AS "time", f.kind AS flag, f.phase, f.role, f.reason AS detail,
                   f.run_id, f.artifact_ref, f.count, f.trace_id,
                   f.phase = p.current_phase AS open
            FROM failures f JOIN projects p USING (project_id)
            WHERE f.project_id = {P}
            UNION ALL
            SELECT e.occurred_at, 'user_override', e.phase, e.role, e.payload->>'action',
                   e.run_id, NULL, 1, e.trace_id, e.phase = p.current_phase
            FROM events e JOIN projects p USING (project_id)
            WHERE e.project_id = {P} AND e.type = 'user_override' AND $__timeFilter(e.occurred_at)
            ORDER BY 1 DESC
            LIMIT 50"""),
            )
            .override_by_name(
                "run_id",
                links_override(url_link("Run page", CONSOLE + "/runs/${__data.fields.run_id}")),
            )
            .override_by_name("trace_id", links_override(trace_link()))
            .override_by_name(
                "artifact_ref",
                links_override(
                    url_link("Why blocked", CONSOLE + "/projects/${project}#why-blocked")
                ),
            )
            .override_by_name("count", unit_override("short"))
        ),
        24,
        8,
    )
    lay.add(
        (
            panel(
                table.Panel(),
                "Runs",
                "The project's runs, latest first, with cost, tokens and duration. "
                "Links: run page and trace.",
                POSTGRES,
                "none",
                Sql(f"""
            SELECT r.status_at AS "time", r.run_id, r.phase, r.role, r.status, r.attempt,
                   r.model, r.cost_usd, r.tokens_in + r.tokens_out AS tokens,
                   EXTRACT(EPOCH FROM r.finished_at - r.started_at) AS duration_seconds,
                   r.trace_id
            FROM runs r
            WHERE r.project_id = {P}
            ORDER BY r.status_at DESC, r.run_id
            LIMIT 50"""),
            )
            .override_by_name(
                "run_id",
                links_override(url_link("Run page", CONSOLE + "/runs/${__data.fields.run_id}")),
            )
            .override_by_name("trace_id", links_override(trace_link()))
            .override_by_name("cost_usd", unit_override("currencyUSD"))
            .override_by_name("tokens", unit_override("short"))
            .override_by_name("duration_seconds", unit_override("s"))
        ),
        24,
        8,
    )
    lay.add(
        panel(
            table.Panel(),
            "Traces",
            "The project's run traces in Tempo (run spans carry "
            "runledger.project_id). Click a trace id to open it.",
            TEMPO,
            "none",
            traceql('{ span.runledger.project_id = "$project" }'),
        ),
        12,
        8,
    )
    lay.add(
        panel(
            logs.Panel(),
            "Run logs",
            "The project's run logs in Loki (OTLP attributes are structured "
            "metadata: runledger_project_id, trace_id). A trace_id opens the trace.",
            LOKI,
            "none",
            logql('{service_name=~".+"} | runledger_project_id = "$project"'),
        ),
        12,
        8,
    )
    return lay.onto(d)
