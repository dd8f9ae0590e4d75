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

__all__ = ["EventTailer"]

log = logging.getLogger(__name__)

# One query per batch. Writers hold the ingest lock (runledger.store.locks) while they
# insert and commit, so seq order is commit order and "seq > last seen" never skips an
# event. The lateral look-ups answer what a single event cannot: when the phase was entered
# (time-to-gate), when the run was queued (queue wait), the run's totals at its end, and the
# phase's first failure since its last success (recovery time). Each look-up runs only for
# its event type.
_BATCH_SQL = """
WITH batch AS MATERIALIZED (
    SELECT * FROM events WHERE seq > %(after)s ORDER BY seq LIMIT %(limit)s
)
SELECT e.seq, e.type, e.tenant_id, e.phase, e.role, e.playbook, e.model, e.occurred_at,
       e.tokens_in, e.tokens_out, e.cost_usd, e.cached, e.attempt, e.trace_id,
       e.payload->>'status' AS status, e.payload->>'partial' AS partial,
       e.payload->>'approved' AS approved,
       entry.entered_at, queue.queued_at, run.tokens AS run_tokens, run.cost_usd AS run_cost,
       run.intervened, run.model AS run_model, run.trace_id AS run_trace, rec.failed_at
FROM batch e
LEFT JOIN LATERAL (
    SELECT max(p.occurred_at) AS entered_at FROM events p
    WHERE e.type = 'phase_advanced' AND p.project_id = e.project_id
      AND p.occurred_at <= e.occurred_at
      AND ((p.type = 'phase_entered' AND p.phase = e.phase)
           OR (p.type = 'phase_advanced' AND p.payload->>'to_phase' = e.phase))
) entry ON true
LEFT JOIN LATERAL (
    SELECT max(q.occurred_at) AS queued_at FROM events q
    WHERE e.type = 'run_started' AND q.run_id = e.run_id AND q.type = 'run_queued'
      AND q.occurred_at <= e.occurred_at
) queue ON true
LEFT JOIN LATERAL (
    SELECT sum(r.tokens_in::bigint + r.tokens_out) AS tokens, sum(r.cost_usd) AS cost_usd,
           bool_or(r.type = 'user_override') AS intervened,
           (array_agg(r.model ORDER BY r.seq DESC) FILTER (WHERE r.model IS NOT NULL))[1]
               AS model,
           (array_agg(r.trace_id ORDER BY r.seq) FILTER (WHERE r.trace_id IS NOT NULL))[1]
               AS trace_id
    FROM events r
    WHERE e.type IN ('run_finished', 'run_failed') AND r.run_id = e.run_id AND r.seq <= e.seq
) run ON true
LEFT JOIN LATERAL (
    SELECT min(f.occurred_at) AS failed_at FROM events f
    WHERE e.type = 'run_finished' AND COALESCE(e.payload->>'status', 'succeeded') = 'succeeded'
      AND f.project_id = e.project_id AND f.phase = e.phase AND f.type = 'run_failed'
      AND f.occurred_at <= e.occurred_at
      AND f.occurred_at > COALESCE((
          SELECT max(s.occurred_at) FROM events s
          WHERE s.project_id = e.project_id AND s.phase = e.phase AND s.type = 'run_finished'
            AND COALESCE(s.payload->>'status', 'succeeded') = 'succeeded'
            AND s.occurred_at < e.occurred_at
      ), '-infinity')
) rec ON true
ORDER BY e.seq
"""

_RUN_STATUSES = ("succeeded", "partial", "failed")


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def _exemplar(trace_id: str | None) -> dict[str, str] | None:
    return {"trace_id": trace_id} if trace_id else None


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
                    row = conn.execute("SELECT COALESCE(max(seq), 0) FROM events").fetchone()
                    self.position = int(row[0]) if row else 0
                log.info("tailing events after seq %d", self.position)
            for _ in range(max_batches):
                cur = conn.execute(
                    _BATCH_SQL, {"after": self.position, "limit": self.config.batch_size}
                )
                columns = [d.name for d in cur.description or ()]
                rows = cur.fetchall()
                conn.commit()  # end the snapshot so the next batch sees newer commits
                for row in rows:
                    self._apply(dict(zip(columns, row, strict=True)))
                if rows:
                    self.position = int(rows[-1][0])
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
        if cost or ev["tokens_in"] or ev["tokens_out"] or ev["model"]:
            labels = (tenant, ev["model"] or NONE, phase, role)
            m.cost.labels(*labels).inc(float(cost))
            m.input_tokens.labels(*labels).inc(ev["tokens_in"])
            m.output_tokens.labels(*labels).inc(ev["tokens_out"])
            cached = m.cached_tokens.labels(*labels)
            if ev["cached"]:
                cached.inc(ev["tokens_in"] + ev["tokens_out"])
        trace = ev["trace_id"]
        if kind == "run_started":
            m.runs_started.labels(tenant, phase, role).inc()
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
            m.cap_hits.labels(tenant, phase, role).inc()
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
