"""Tail the ``events`` table by ingest sequence into counters and histograms."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from runledger.exporter._config import ExporterConfig
from runledger.exporter._metrics import NONE, TailMetrics
from runledger.store import Database
from runledger.store.event_tail import events_after, last_seq

__all__ = ["EventTailer"]

log = logging.getLogger(__name__)


_RUN_STATUSES = ("succeeded", "partial", "failed")


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def _exemplar(trace_id: str | None) -> dict[str, str] | None:
    # An all-zero id (stored before ingest refused them) names no trace.
    return {"trace_id": trace_id} if trace_id and trace_id.strip("0") else None


class EventTailer:
    """Read new events in ingest order and update the metrics of ``TailMetrics``.

    Args:
        db: the ledger database.
        config: exporter settings (batch size, start position, phase targets).
        registry: where the metrics are registered.
    """

    def __init__(
        self, db: Database, *, config: ExporterConfig, registry: CollectorRegistry
    ) -> None:
        self.db = db
        self.config = config
        self.metrics = TailMetrics(registry)
        self.position: int | None = None
        self.processed = 0

    def poll(self, max_batches: int = 100) -> int:
        """Process events newer than the position; return how many were processed.

        Raises:
            DatabaseUnavailable: the ledger could not be read; nothing was half-applied.
        """
        done = 0
        with self.db.connection() as conn:
            if self.position is None:
                if self.config.start_at == "beginning":
                    self.position = 0
                else:
                    self.position = last_seq(conn)
                log.info("tailing events after seq %d", self.position)
            for _ in range(max_batches):
                rows = events_after(conn, self.position, self.config.batch_size)
                conn.commit()  # end the snapshot so the next batch sees newer commits
                for row in rows:
                    self._apply(row)
                if rows:
                    self.position = int(rows[-1]["seq"])
                    done += len(rows)
                    self.processed += len(rows)
                if len(rows) < self.config.batch_size:
                    break
        return done

    def _apply(self, ev: dict[str, Any]) -> None:
        m = self.metrics
        kind: str = ev["type"]
        tenant, phase, role = ev["tenant_id"], ev["phase"], ev["role"]
        playbook = ev["playbook"] or NONE
        at: datetime = ev["occurred_at"]
        cost: Decimal = ev["cost_usd"]
        trace = ev["trace_id"]
        if cost or ev["tokens_in"] or ev["tokens_out"] or ev["model"]:
            labels = (tenant, ev["model"] or NONE, phase, role)
            # The exemplar lets a cost spike on a dashboard open the trace that spent it.
            m.cost.labels(*labels).inc(float(cost), _exemplar(trace) if cost else None)
            m.input_tokens.labels(*labels).inc(ev["tokens_in"])
            m.output_tokens.labels(*labels).inc(ev["tokens_out"])
            cached = m.cached_tokens.labels(*labels)
            if ev["cached"]:
                cached.inc(ev["tokens_in"] + ev["tokens_out"])
        if kind == "run_started":
            m.runs_started.labels(tenant, phase, role).inc()
            uncapped = m.uncapped_runs.labels(tenant, phase, role)
            if ev["uncapped"] == "true":
                uncapped.inc()
            retries = m.run_retries.labels(tenant, phase, role)
            if (ev["attempt"] or 1) > 1:
                retries.inc()
            if ev["queued_at"] is not None:
                m.queue_wait.labels(tenant, role).observe(
                    _seconds(at, ev["queued_at"]), _exemplar(trace)
                )
        elif kind in ("run_finished", "run_failed"):
            status = "failed" if kind == "run_failed" else (ev["status"] or "succeeded")
            for s in _RUN_STATUSES:  # siblings at zero so ratios exist before a first failure
                m.runs_finished.labels(tenant, phase, role, s)
            m.runs_finished.labels(tenant, phase, role, status).inc()
            model = ev["run_model"] or NONE
            for s in _RUN_STATUSES:
                m.model_runs_finished.labels(model, s)
            m.model_runs_finished.labels(model, status).inc()
            intervened = m.runs_intervened.labels(tenant, phase, role)
            if ev["intervened"]:
                intervened.inc()
            exemplar = _exemplar(trace or ev["run_trace"])
            m.run_cost.labels(tenant, phase).observe(float(ev["run_cost"] or 0), exemplar)
            m.run_tokens.labels(tenant, phase).observe(int(ev["run_tokens"] or 0), exemplar)
            if status == "succeeded" and ev["failed_at"] is not None:
                m.recovery.labels(phase).observe(_seconds(at, ev["failed_at"]), exemplar)
        elif kind == "user_override":
            m.user_overrides.labels(tenant, phase, role).inc()
        elif kind == "cap_hit":
            m.cap_hits.labels(tenant, phase, role, ev["cap"] or NONE).inc()
        elif kind == "artifact_written":
            m.artifacts_written.labels(tenant, phase, playbook).inc()
            m.validation_failures.labels(tenant, phase, playbook)
        elif kind == "validation_failed":
            m.validation_failures.labels(tenant, phase, playbook).inc()
        elif kind == "phase_entered":
            m.phase_entries.labels(tenant, phase, playbook).inc()
        elif kind == "phase_advanced":
            m.phase_advances.labels(tenant, phase, playbook).inc()
            within = m.phase_advances_within_target.labels(tenant, phase, playbook)
            if ev["entered_at"] is not None:
                took = _seconds(at, ev["entered_at"])
                m.time_to_gate.labels(tenant, phase).observe(took, _exemplar(trace))
                if took <= self.config.phase_target(phase):
                    within.inc()
        elif kind == "publish_done":
            status = "partial" if ev["partial"] == "true" else "complete"
            for s in ("complete", "partial"):
                m.publishes.labels(tenant, playbook, s)
            m.publishes.labels(tenant, playbook, status).inc()
        elif kind == "microsite_visit":
            m.microsite_visits.labels(tenant, playbook).inc()
            m.microsite_conversions.labels(tenant, playbook)
        elif kind == "microsite_conversion":
            m.microsite_conversions.labels(tenant, playbook).inc()
        elif kind == "demo_started":
            m.demos_started.labels(tenant).inc()
            m.demos_completed.labels(tenant)
        elif kind == "demo_completed":
            m.demos_completed.labels(tenant).inc()
        elif kind == "proof_requested":
            m.proofs_requested.labels(tenant).inc()
            for s in ("approved", "rejected"):
                m.proofs_completed.labels(tenant, s)
        elif kind == "proof_completed":
            status = "rejected" if ev["approved"] == "false" else "approved"
            m.proofs_completed.labels(tenant, status).inc()
        elif kind == "external_call":
            status = "error" if ev["status"] == "error" else "ok"
            for s in ("ok", "error"):
                m.external_calls.labels(tenant, role, s)
            m.external_calls.labels(tenant, role, status).inc()
        elif kind == "impersonation_started":
            m.impersonations.labels(tenant).inc()
