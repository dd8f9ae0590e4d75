"""The alert rules of runledger, rendered into Prometheus rule files from one thresholds file.

Every alert is an ``Alert`` below: its expression, labels and texts, with ``[[name]]`` holes
that ``prometheus/thresholds.yml`` fills (thresholds and ``for:`` durations live only
there). ``runledger alerts render`` writes ``prometheus/alerts/<area>.alerts.yml``;
``--check`` fails when a rule file no longer matches, and a test runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ALERTS",
    "AREAS",
    "Alert",
    "alert_names",
    "load_thresholds",
    "render",
    "render_files",
]

AREAS = ("owner", "admin", "runs")
"""Rule files, one per area: owners' alerts, the platform's, run quality."""

RUNBOOK = "docs/runbook.md"
"""Where ``runbook_url`` points: an anchor per alert in the repository's runbook."""

ADMIN_DASHBOARD = "/d/runledger-admin"
TENANT_DASHBOARD = "/d/runledger-tenant?var-tenant={{ $labels.tenant }}"

_HOLE_RE = re.compile(r"\[\[(\w+)\]\]")
_DURATION_RE = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


@dataclass(frozen=True)
class Alert:
    """One alert rule; ``[[key]]`` in ``expr`` and ``description`` come from its thresholds."""

    name: str
    area: str
    audience: str
    severity: str
    expr: str
    summary: str
    description: str
    per_tenant: bool = True
    requires_ledger: bool = True
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK}#{self.name.lower()}"

    @property
    def dashboard(self) -> str:
        return TENANT_DASHBOARD if self.per_tenant else ADMIN_DASHBOARD


def _tenant_ratio(numerator: str, denominator: str, threshold: str) -> str:
    """PromQL: per tenant, ``numerator`` over ``denominator`` (their increases in
    ``[[window]]``) above ``threshold``, only where the denominator grew by at least
    ``[[min_runs]]`` (a handful of runs is no trend)."""
    num = f"sum by (tenant) (increase({numerator}[[[window]]]))"
    den = f"sum by (tenant) (increase({denominator}[[[window]]]))"
    return f"{num} / {den} > {threshold} and on (tenant) {den} >= [[min_runs]]"


ALERTS: tuple[Alert, ...] = (
    # -- owner ---------------------------------------------------------------------------------
    Alert(
        name="TenantDailyCapNearlyReached",
        area="owner",
        audience="owner",
        severity="warning",
        expr="tenant:runledger_cap_utilisation:ratio >= [[ratio]]",
        summary="The tenant has spent most of today's daily cap.",
        description=(
            "Tenant {{ $labels.tenant }} has spent {{ $value | humanizePercentage }} of today's"
            " daily cap. New spend is refused once the cap is reached; ask an admin for a"
            " temporary raise if today's work needs more."
        ),
    ),
    Alert(
        name="TenantDailyCapReached",
        area="owner",
        audience="owner",
        severity="critical",
        expr=(
            "tenant:runledger_cap_utilisation:ratio >= [[ratio]]"
            " or on (tenant) (max by (tenant) (runledger_tenant_blocked) > 0)"
        ),
        summary="The tenant's daily cap is reached: new spend is refused until tomorrow (UTC).",
        description=(
            "Tenant {{ $labels.tenant }} reached its daily cap: budget leases are refused and"
            " runs stop with partial results until the UTC day ends or the cap is raised."
        ),
    ),
    Alert(
        name="ValidationFailuresRepeated",
        area="owner",
        audience="owner",
        severity="warning",
        expr=(
            "sum by (tenant, phase) (increase(runledger_validation_failures_total[[[window]]]))"
            " >= [[count]]"
        ),
        summary="The Validator keeps rejecting artifacts of one phase.",
        description=(
            "The Validator rejected {{ $value | humanize }} artifacts of phase"
            " {{ $labels.phase }} of tenant {{ $labels.tenant }} in the last [[window]]."
        ),
    ),
    Alert(
        name="PhaseStalled",
        area="owner",
        audience="owner",
        severity="warning",
        expr="max by (tenant, phase) (runledger_stuck_projects) > 0",
        summary="Projects have been stuck in a phase for more than [[hours]] hours.",
        description=(
            "{{ $value | humanize }} project(s) of tenant {{ $labels.tenant }} have been in phase"
            " {{ $labels.phase }} for more than [[hours]] hours without passing its gate."
        ),
    ),
    Alert(
        name="ProofOverdue",
        area="owner",
        audience="owner",
        severity="warning",
        expr="max by (tenant) (runledger_proofs_overdue) >= [[count]]",
        summary="Proofs sent to the owner are past their due time.",
        description=(
            "{{ $value | humanize }} proof(s) of tenant {{ $labels.tenant }} are past their due"
            " time without an answer; publishing waits for them."
        ),
    ),
    # -- admin ---------------------------------------------------------------------------------
    Alert(
        name="TenantDailyCapBreached",
        area="admin",
        audience="admin",
        severity="critical",
        expr=(
            "sum by (tenant) (runledger_tenant_spend_today_usd)"
            " > sum by (tenant) (runledger_tenant_daily_cap_usd) * [[ratio]]"
        ),
        summary="A tenant's recorded spend is above its daily cap.",
        description=(
            'Tenant {{ $labels.tenant }} has spent {{ $value | printf "%.2f" }} USD today,'
            " above its daily cap: spend bypassed the budget leases."
        ),
    ),
    Alert(
        name="TenantCapHitsFrequent",
        area="admin",
        audience="admin",
        severity="warning",
        expr="sum by (tenant, cap) (increase(runledger_cap_hits_total[[[window]]])) >= [[count]]",
        summary="Many runs of a tenant are being stopped by the same cap.",
        description=(
            "{{ $value | humanize }} runs of tenant {{ $labels.tenant }} were stopped by the"
            " {{ $labels.cap }} cap in the last [[window]]."
        ),
    ),
    Alert(
        name="ModelErrorSpike",
        area="admin",
        audience="admin",
        severity="warning",
        per_tenant=False,
        expr=(
            "model:runledger_model_runs_failed_per_finished:ratio_rate5m > [[ratio]]"
            " and on (model)"
            " sum by (model) (increase(runledger_model_runs_finished_total[5m])) >= [[min_runs]]"
        ),
        summary="Runs using one model are failing far more than usual.",
        description=(
            "{{ $value | humanizePercentage }} of the runs that used model {{ $labels.model }}"
            " failed over the last 5 minutes."
        ),
    ),
    Alert(
        name="AlertDeliveryFailing",
        area="admin",
        audience="admin",
        severity="warning",
        per_tenant=False,
        requires_ledger=False,
        expr=(
            "sum(increase(runledger_control_webhook_failures_total[[[window]]])) >= [[count]]"
            " or sum(increase(alertmanager_notifications_failed_total[[[window]]])) >= [[count]]"
        ),
        summary="Alert notifications are failing to reach people.",
        description=(
            "{{ $value | humanize }} alert notifications (email, Slack or webhook) failed after"
            " their retries in the last [[window]]."
        ),
    ),
    Alert(
        name="QueueLatencySustained",
        area="admin",
        audience="admin",
        severity="warning",
        per_tenant=False,
        expr="role:runledger_queue_wait_seconds:mean5m > [[seconds]]",
        summary="Runs wait too long in the queue before they start.",
        description=(
            "Runs of role {{ $labels.role }} waited {{ $value | humanizeDuration }} on average"
            " in the queue over the last 5 minutes."
        ),
    ),
    Alert(
        name="PublisherFrozen",
        area="admin",
        audience="admin",
        severity="warning",
        per_tenant=False,
        expr="max by (playbook) (runledger_publisher_frozen) > 0",
        summary="Quality sampling froze the Publisher of a playbook.",
        description=(
            "The Publisher of playbook {{ $labels.playbook }} is frozen by quality sampling:"
            " nothing of it is published until an admin unfreezes it."
        ),
    ),
    Alert(
        name="ExporterDown",
        area="admin",
        audience="admin",
        severity="critical",
        per_tenant=False,
        requires_ledger=False,
        expr='up{job="runledger-exporter"} == 0 or absent(up{job="runledger-exporter"})',
        summary="Prometheus cannot scrape the runledger exporter.",
        description=(
            "The exporter has not answered Prometheus's scrapes: no spend, cap or pipeline"
            " metric is current, and the alerts that use them are held back."
        ),
        extra_labels={"component": "exporter"},
    ),
    Alert(
        name="LedgerDown",
        area="admin",
        audience="admin",
        severity="critical",
        per_tenant=False,
        requires_ledger=False,
        expr="max(runledger_exporter_database_up) == 0",
        summary="The exporter cannot reach the ledger database.",
        description=(
            "The exporter cannot query PostgreSQL: ledger gauges are stale and counters stand"
            " still; the alerts that use them are held back until the ledger is back."
        ),
        extra_labels={"component": "ledger"},
    ),
    # -- run quality (admin) -------------------------------------------------------------------
    Alert(
        name="HumanInterventionRateHigh",
        area="runs",
        audience="admin",
        severity="warning",
        expr=_tenant_ratio(
            "runledger_runs_intervened_total", "runledger_runs_finished_total", "[[ratio]]"
        ),
        summary="Too many runs of a tenant need a human to intervene.",
        description=(
            "{{ $value | humanizePercentage }} of the runs of tenant {{ $labels.tenant }} that"
            " finished in the last [[window]] needed a human intervention."
        ),
    ),
    Alert(
        name="RunCostHigh",
        area="runs",
        audience="admin",
        severity="warning",
        expr=_tenant_ratio("runledger_run_cost_usd_sum", "runledger_run_cost_usd_count", "[[usd]]"),
        summary="A tenant's runs cost more than expected on average.",
        description=(
            'Runs of tenant {{ $labels.tenant }} cost {{ $value | printf "%.4f" }} USD on'
            " average over the last [[window]] (threshold [[usd]] USD)."
        ),
    ),
    Alert(
        name="RunFailureRateHigh",
        area="runs",
        audience="admin",
        severity="warning",
        expr=_tenant_ratio(
            'runledger_runs_finished_total{status="failed"}',
            "runledger_runs_finished_total",
            "[[ratio]]",
        ),
        summary="Too many runs of a tenant fail.",
        description=(
            "{{ $value | humanizePercentage }} of the runs of tenant {{ $labels.tenant }} that"
            " finished in the last [[window]] failed."
        ),
    ),
)
"""Every alert of runledger except quality sampling's (prometheus/alerts/quality.yml)."""


def alert_names(audience: str | None = None) -> list[str]:
    """Return the names of the alerts (of one audience), in file order."""
    return [a.name for a in ALERTS if audience is None or a.audience == audience]


def load_thresholds(path: Path) -> dict[str, dict[str, Any]]:
    """Read and check the thresholds file: one mapping with a valid ``for`` per alert."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of alert names")
    unknown = sorted(set(data) - set(alert_names()))
    missing = sorted(set(alert_names()) - set(data))
    if unknown or missing:
        raise ValueError(f"{path}: unknown alerts {unknown}, alerts without thresholds {missing}")
    for name, values in data.items():
        if not isinstance(values, dict) or not _DURATION_RE.match(str(values.get("for", ""))):
            raise ValueError(f"{path}: {name} needs a 'for:' duration such as 5m")
    return data


def _fill(text: str, values: Mapping[str, Any], name: str) -> str:
    def hole(match: re.Match[str]) -> str:
        key = match[1]
        if key not in values:
            raise ValueError(f"thresholds: {name} has no {key!r}")
        return str(values[key])

    return _HOLE_RE.sub(hole, text)


def _rule(alert: Alert, values: Mapping[str, Any], for_override: str | None) -> dict[str, Any]:
    labels = {"severity": alert.severity, "audience": alert.audience}
    if alert.requires_ledger:
        labels["requires"] = "ledger"
    labels.update(alert.extra_labels)
    return {
        "alert": alert.name,
        "expr": _fill(alert.expr, values, alert.name),
        "for": for_override or str(values["for"]),
        "labels": labels,
        "annotations": {
            "summary": _fill(alert.summary, values, alert.name),
            "description": _fill(alert.description, values, alert.name),
            "runbook_url": alert.runbook_url,
            "dashboard": alert.dashboard,
        },
    }


def render(
    thresholds: Mapping[str, Mapping[str, Any]], *, for_override: str | None = None
) -> dict[str, str]:
    """Return ``{file name: YAML text}`` of every area's rule file.

    ``for_override`` replaces every ``for:`` (end-to-end tests and the latency benchmark
    use a short one; the shipped files never do).
    """
    files = {}
    for area in AREAS:
        rules = [_rule(a, thresholds[a.name], for_override) for a in ALERTS if a.area == area]
        doc = {"groups": [{"name": f"{area}.alerts", "rules": rules}]}
        header = (
            "# Generated by `runledger alerts render` from prometheus/thresholds.yml: edit that"
            " file\n# (thresholds) or runledger/alert_rules.py (expressions, texts), not this"
            " one.\n"
        )
        files[f"{area}.alerts.yml"] = header + yaml.safe_dump(
            doc, sort_keys=False, width=4096, allow_unicode=True
        )
    return files


def render_files(
    thresholds_path: Path, out_dir: Path, *, for_override: str | None = None, check: bool = False
) -> list[Path]:
    """Write (or with ``check`` compare) the rule files; return the paths that differ."""
    files = render(load_thresholds(thresholds_path), for_override=for_override)
    stale = []
    for name, text in files.items():
        path = out_dir / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale
