"""A deterministic pipeline workload, and the metric figures PostgreSQL says it must produce.

``expected_metrics`` is an independent, plain-Python reading of the events table following
docs/metrics.md; the exporter computes the same figures with SQL look-ups and counters.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client.utils import floatToGoString

from _support import event
from runledger.exporter._metrics import (
    QUEUE_WAIT_BUCKETS,
    RECOVERY_BUCKETS,
    RUN_COST_BUCKETS,
    RUN_TOKEN_BUCKETS,
    TIME_TO_GATE_BUCKETS,
)

TENANT_CAPS = {"acme": "5", "globex": "5", "initech": "0.30", "umbrella": "5"}
# (tenant, project key, playbook, seconds offset)
PROJECTS = [
    ("acme", "p1", "web", 0),
    ("acme", "p2", "web", 7),
    ("globex", "p1", None, 13),
    ("initech", "p1", "web", 19),
]
PHASE_TARGETS = {"intake": 60, "build": 60, "review": 120, "publish": 300}
DEFAULT_TARGET = 300

Labels = frozenset[tuple[str, str]]
Series = dict[str, dict[Labels, float]]


def trace_of(run_id: str) -> str:
    return hashlib.md5(run_id.encode(), usedforsecurity=False).hexdigest()


def project_events(
    tenant: str, key: str, playbook: str | None, base: datetime, round_no: int
) -> list[dict[str, Any]]:
    """The events of one project going through intake, build, review and publish."""
    project = f"{tenant}-{key}-r{round_no}"
    out: list[dict[str, Any]] = []

    def add(type_: str, t: float, phase: str, role: str, run: str, **fields: Any) -> None:
        run_id = f"{project}-{run}"
        fields.setdefault("trace_id", trace_of(run_id))
        if playbook:
            fields.setdefault("playbook", playbook)
        out.append(
            event(
                type_, tenant_id=tenant, project_id=project, run_id=run_id, phase=phase,
                role=role, occurred_at=(base + timedelta(seconds=t)).isoformat(), **fields,
            )
        )  # fmt: skip

    add("phase_entered", 0, "intake", "coordinator", "run1")
    add("run_queued", 1, "intake", "coordinator", "run1")
    add("run_started", 3, "intake", "coordinator", "run1")
    add("artifact_written", 10, "intake", "coordinator", "run1", model="gpt-a",
        tokens_in=1000, tokens_out=200, cost_usd="0.020", artifact_path="brief.md",
        artifact_version=1)  # fmt: skip
    add("run_finished", 20, "intake", "coordinator", "run1")
    add("phase_advanced", 30, "intake", "coordinator", "run1", payload={"to_phase": "build"})
    add("run_queued", 31, "build", "implementer", "run2")
    add("run_started", 40, "build", "implementer", "run2")
    add("artifact_written", 50, "build", "implementer", "run2", model="claude-b",
        tokens_in=4000, tokens_out=1500, cost_usd="0.120", artifact_path="site/index.html",
        artifact_version=1)  # fmt: skip
    add("run_started", 52, "build", "validator", "run3")
    add("validation_failed", 55, "build", "validator", "run3",
        payload={"reason": "missing alt text", "rule": "a11y"})  # fmt: skip
    add("run_finished", 56, "build", "validator", "run3")
    add("run_failed", 60, "build", "implementer", "run2", payload={"reason": "tests failed"})
    add("run_queued", 61, "build", "implementer", "run4", attempt=2)
    add("run_started", 62, "build", "implementer", "run4", attempt=2)
    add("user_override", 65, "build", "implementer", "run4",
        payload={"action": "approved the fix", "actor": "owner-1"})  # fmt: skip
    add("artifact_written", 80, "build", "implementer", "run4", model="gpt-a", tokens_in=2000,
        tokens_out=800, cost_usd="0.050", cached=True, artifact_path="site/index.html",
        artifact_version=2)  # fmt: skip
    if tenant == "initech":
        add("cap_hit", 85, "build", "implementer", "run4",
            payload={"cap": "tokens", "limit": "100", "spent": "120"})  # fmt: skip
    add("run_finished", 90, "build", "implementer", "run4")
    add("phase_advanced", 100, "build", "implementer", "run4", payload={"to_phase": "review"})
    add("run_started", 101, "review", "validator", "run5")
    add("external_call", 120, "review", "validator", "run5", cost_usd="0.003",
        payload={"service": "linkcheck", "summary": "checked links",
                 "status": "error" if tenant == "globex" else "ok"})  # fmt: skip
    add("run_finished", 130, "review", "validator", "run5", model="gpt-a", tokens_in=300,
        tokens_out=100, cost_usd="0.010", payload={"status": "partial"})  # fmt: skip
    add("phase_advanced", 200, "review", "validator", "run5", payload={"to_phase": "publish"})
    proof = f"{project}-proof"
    add("publish_done", 210, "publish", "publisher", "run6", artifact_path="site/index.html",
        artifact_version=2, payload={"partial": tenant == "initech"})  # fmt: skip
    overdue = tenant == "acme" and key == "p2"
    due = base + timedelta(seconds=-60 if overdue else 3811)
    add("proof_requested", 211, "publish", "publisher", "run6",
        payload={"proof_id": proof, "due_at": due.isoformat()})  # fmt: skip
    if not overdue:
        add("proof_completed", 220, "publish", "publisher", "run6",
            payload={"proof_id": proof, "approved": tenant != "globex"})  # fmt: skip
    if tenant in ("acme", "globex"):
        for i, t in enumerate((230, 231)):
            add("microsite_visit", t, "publish", "publisher", "run6",
                payload={"microsite_id": "site-1", "visitor": f"{i:016x}"})  # fmt: skip
        add("microsite_conversion", 232, "publish", "publisher", "run6",
            payload={"microsite_id": "site-1", "visitor": f"{0:016x}"})  # fmt: skip
        add("demo_started", 233, "publish", "publisher", "run6",
            payload={"demo_id": f"{project}-demo", "city": "Lyon"})  # fmt: skip
        if tenant == "acme":
            add("demo_completed", 234, "publish", "publisher", "run6",
                payload={"demo_id": f"{project}-demo", "city": "Lyon"})  # fmt: skip
    if tenant == "globex":
        for t, kind in ((235, "impersonation_started"), (236, "impersonation_ended")):
            add(kind, t, "publish", "publisher", "run6",
                payload={"actor": "support-7", "reason": "ticket 12"})  # fmt: skip
    add("phase_advanced", 240, "publish", "publisher", "run6")
    add("run_queued", 241, "publish", "publisher", "run7")
    add("run_queued", 242, "build", "implementer", "run8")
    # An agent of globex runs with the tenant cap turned off (RUNLEDGER_ENFORCE_CAPS=0).
    add("run_started", 245, "build", "implementer", "run8",
        payload={"uncapped": True} if tenant == "globex" else {})  # fmt: skip
    return out


def workload(round_no: int, base: datetime, now: datetime) -> dict[str, list[list[dict]]]:
    """Return, per tenant, the batches one round posts (each project is one batch).

    Every round has the same shape (new projects and runs, same amounts and durations), so
    round 2 moves exactly the series round 1 created. Round 1 alone also writes a paused
    tenant's project, stuck in build for three days.
    """
    batches: dict[str, list[list[dict]]] = defaultdict(list)
    for tenant, key, playbook, offset in PROJECTS:
        start = base + timedelta(seconds=offset + round_no)
        batches[tenant].append(project_events(tenant, key, playbook, start, round_no))
    if round_no != 1:
        return batches
    stuck_at = now - timedelta(days=3)
    batches["umbrella"].append(
        [event("phase_entered", tenant_id="umbrella", project_id=f"umbrella-p1-r{round_no}",
               run_id=f"umbrella-run1-r{round_no}", phase="build", role="coordinator",
               occurred_at=stuck_at.isoformat())]
    )  # fmt: skip
    return batches


# -- the figures PostgreSQL says the exporter must expose ------------------------------------


def _key(**labels: str) -> Labels:
    return frozenset(labels.items())


def _observe(
    series: Series, name: str, labels: dict[str, str], value: float, buckets: Iterable[float]
) -> None:
    for bound in (*buckets, float("inf")):
        key = _key(**labels, le=floatToGoString(bound))
        series[f"{name}_bucket"][key] = series[f"{name}_bucket"].get(key, 0) + (
            1 if value <= bound else 0
        )
    series[f"{name}_sum"][_key(**labels)] = series[f"{name}_sum"].get(_key(**labels), 0) + value
    series[f"{name}_count"][_key(**labels)] = series[f"{name}_count"].get(_key(**labels), 0) + 1


def _add(series: Series, name: str, value: float, **labels: str) -> None:
    key = _key(**labels)
    series[name][key] = series[name].get(key, 0) + value


def expected_metrics(rows: list[dict[str, Any]], *, after_seq: int = 0) -> Series:
    """Figures of the events with seq > ``after_seq``; look-ups see every row."""
    series: Series = defaultdict(dict)
    by_project: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_project[r["project_id"]].append(r)
        by_run[r["run_id"]].append(r)
    for e in rows:
        if e["seq"] <= after_seq:
            continue
        kind, tenant, phase, role = e["type"], e["tenant_id"], e["phase"], e["role"]
        playbook = e["playbook"] or "none"
        at: datetime = e["occurred_at"]
        payload = e["payload"]
        cost: Decimal = e["cost_usd"]
        if cost or e["tokens_in"] or e["tokens_out"] or e["model"]:
            labels = {"tenant": tenant, "model": e["model"] or "none", "phase": phase, "role": role}
            _add(series, "runledger_cost_usd_total", float(cost), **labels)
            _add(series, "runledger_input_tokens_total", e["tokens_in"], **labels)
            _add(series, "runledger_output_tokens_total", e["tokens_out"], **labels)
            cached = e["tokens_in"] + e["tokens_out"] if e["cached"] else 0
            _add(series, "runledger_cached_tokens_total", cached, **labels)
        tpr = {"tenant": tenant, "phase": phase, "role": role}
        tpp = {"tenant": tenant, "phase": phase, "playbook": playbook}
        if kind == "run_started":
            _add(series, "runledger_runs_started_total", 1, **tpr)
            uncapped = 1 if payload.get("uncapped") else 0
            _add(series, "runledger_sdk_uncapped_runs_total", uncapped, **tpr)
            _add(series, "runledger_run_retries_total", 1 if (e["attempt"] or 1) > 1 else 0, **tpr)
            queued = [q["occurred_at"] for q in by_run[e["run_id"]]
                      if q["type"] == "run_queued" and q["occurred_at"] <= at]  # fmt: skip
            if queued:
                _observe(series, "runledger_queue_wait_seconds", {"tenant": tenant, "role": role},
                         (at - max(queued)).total_seconds(), QUEUE_WAIT_BUCKETS)  # fmt: skip
        elif kind in ("run_finished", "run_failed"):
            status = "failed" if kind == "run_failed" else payload.get("status", "succeeded")
            for s in ("succeeded", "partial", "failed"):
                _add(series, "runledger_runs_finished_total", 1 if s == status else 0, **tpr,
                     status=s)  # fmt: skip
            upto = [r for r in by_run[e["run_id"]] if r["seq"] <= e["seq"]]
            models = [r["model"] for r in upto if r["model"]]
            model = models[-1] if models else "none"
            for s in ("succeeded", "partial", "failed"):
                _add(series, "runledger_model_runs_finished_total", 1 if s == status else 0,
                     model=model, status=s)  # fmt: skip
            intervened = any(r["type"] == "user_override" for r in upto)
            _add(series, "runledger_runs_intervened_total", 1 if intervened else 0, **tpr)
            run_cost = float(sum((r["cost_usd"] for r in upto), Decimal(0)))
            run_tokens = sum(r["tokens_in"] + r["tokens_out"] for r in upto)
            tp = {"tenant": tenant, "phase": phase}
            _observe(series, "runledger_run_cost_usd", tp, run_cost, RUN_COST_BUCKETS)
            _observe(series, "runledger_run_tokens", tp, run_tokens, RUN_TOKEN_BUCKETS)
            if status == "succeeded":
                same = [r for r in by_project[e["project_id"]] if r["phase"] == phase]
                successes = [r["occurred_at"] for r in same if r["type"] == "run_finished"
                             and r["payload"].get("status", "succeeded") == "succeeded"
                             and r["occurred_at"] < at]  # fmt: skip
                since = max(successes) if successes else None
                failed = [r["occurred_at"] for r in same if r["type"] == "run_failed"
                          and r["occurred_at"] <= at
                          and (since is None or r["occurred_at"] > since)]  # fmt: skip
                if failed:
                    _observe(series, "runledger_failure_recovery_seconds", {"phase": phase},
                             (at - min(failed)).total_seconds(), RECOVERY_BUCKETS)  # fmt: skip
        elif kind == "user_override":
            _add(series, "runledger_user_overrides_total", 1, **tpr)
        elif kind == "cap_hit":
            _add(series, "runledger_cap_hits_total", 1, **tpr, cap=e["payload"]["cap"])
        elif kind == "artifact_written":
            _add(series, "runledger_artifacts_written_total", 1, **tpp)
            _add(series, "runledger_validation_failures_total", 0, **tpp)
        elif kind == "validation_failed":
            _add(series, "runledger_validation_failures_total", 1, **tpp)
        elif kind == "phase_entered":
            _add(series, "runledger_phase_entries_total", 1, **tpp)
        elif kind == "phase_advanced":
            _add(series, "runledger_phase_advances_total", 1, **tpp)
            entries = [r["occurred_at"] for r in by_project[e["project_id"]]
                       if r["occurred_at"] <= at and (
                           (r["type"] == "phase_entered" and r["phase"] == phase)
                           or (r["type"] == "phase_advanced"
                               and r["payload"].get("to_phase") == phase))]  # fmt: skip
            within = 0
            if entries:
                took = (at - max(entries)).total_seconds()
                tp = {"tenant": tenant, "phase": phase}
                _observe(series, "runledger_phase_time_to_gate_seconds", tp, took,
                         TIME_TO_GATE_BUCKETS)  # fmt: skip
                within = 1 if took <= PHASE_TARGETS.get(phase, DEFAULT_TARGET) else 0
            _add(series, "runledger_phase_advances_within_target_total", within, **tpp)
        elif kind == "publish_done":
            status = "partial" if payload.get("partial") else "complete"
            for s in ("complete", "partial"):
                _add(series, "runledger_publishes_total", 1 if s == status else 0,
                     tenant=tenant, playbook=playbook, status=s)  # fmt: skip
        elif kind == "microsite_visit":
            _add(series, "runledger_microsite_visits_total", 1, tenant=tenant, playbook=playbook)
            _add(series, "runledger_microsite_conversions_total", 0, tenant=tenant,
                 playbook=playbook)  # fmt: skip
        elif kind == "microsite_conversion":
            _add(series, "runledger_microsite_conversions_total", 1, tenant=tenant,
                 playbook=playbook)  # fmt: skip
        elif kind == "demo_started":
            _add(series, "runledger_demos_started_total", 1, tenant=tenant)
            _add(series, "runledger_demos_completed_total", 0, tenant=tenant)
        elif kind == "demo_completed":
            _add(series, "runledger_demos_completed_total", 1, tenant=tenant)
        elif kind == "proof_requested":
            _add(series, "runledger_proofs_requested_total", 1, tenant=tenant)
            for s in ("approved", "rejected"):
                _add(series, "runledger_proofs_completed_total", 0, tenant=tenant, status=s)
        elif kind == "proof_completed":
            status = "approved" if payload.get("approved", True) else "rejected"
            _add(series, "runledger_proofs_completed_total", 1, tenant=tenant, status=status)
        elif kind == "external_call":
            status = "error" if payload.get("status") == "error" else "ok"
            for s in ("ok", "error"):
                _add(series, "runledger_external_calls_total", 1 if s == status else 0,
                     tenant=tenant, role=role, status=s)  # fmt: skip
        elif kind == "impersonation_started":
            _add(series, "runledger_impersonations_total", 1, tenant=tenant)
    return series
