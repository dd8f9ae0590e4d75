"""Constants shared by ingest, retention and benchmarks.

The ingest transaction itself is the SQL function ``ingest_batch(jsonb)`` created by the
migrations: one round trip stages a batch, checks ownership, de-duplicates, inserts the
events and applies every effect set-wise.
"""

from __future__ import annotations

# Held by writers to commit, so events.seq order is commit order ("runlings").
INGEST_LOCK = 0x72756E6C_696E6773
# Serialises partition DDL ("runlpart"); always taken before INGEST_LOCK.
PARTITION_LOCK = 0x72756E6C_70617274

EVENT_COLUMNS = (
    "event_id", "type", "tenant_id", "project_id", "run_id", "phase", "role", "playbook",
    "occurred_at", "tokens_in", "tokens_out", "cost_usd", "model", "cached", "artifact_path",
    "artifact_version", "attempt", "trace_id", "span_id", "payload",
)  # fmt: skip

COPY_EVENTS = f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
