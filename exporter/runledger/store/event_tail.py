"""Read the events table in ingest order, with what each event needs to become metrics."""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["events_after", "last_seq"]

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
       e.payload->>'approved' AS approved, e.payload->>'uncapped' AS uncapped,
       e.payload->>'cap' AS cap,
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


def events_after(conn: psycopg.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Return up to ``limit`` events with ``seq > after`` in seq order, as column mappings."""
    cur = conn.execute(_BATCH_SQL, {"after": after, "limit": limit})
    columns = [d.name for d in cur.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def last_seq(conn: psycopg.Connection) -> int:
    """Return the highest ingest sequence number stored (0 when there is none)."""
    row = conn.execute("SELECT COALESCE(max(seq), 0) FROM events").fetchone()
    return int(row[0]) if row else 0
