"""Spans received over OTLP, stored in ``trace_spans`` (idempotent by trace and span id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from runledger.store._database import Database

__all__ = ["SpanRow", "forget_spans", "known_tenants", "spans_of_run", "store_spans"]


@dataclass(slots=True)
class SpanRow:
    """One span as ``trace_spans`` holds it (attributes already redacted)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    run_id: str
    tenant_id: str
    name: str
    started_at: datetime
    duration_ms: float
    kind: str
    status: str
    service: str | None
    unpriced: bool
    attributes: dict[str, Any]


def store_spans(db: Database, spans: Sequence[SpanRow]) -> set[tuple[str, str]]:
    """Insert ``spans`` (one statement); a span already stored is left as it is.

    Returns the (trace id, span id) of the spans newly stored.
    """
    if not spans:
        return set()
    body = orjson.dumps(list(spans)).decode()  # orjson writes dataclasses and datetimes itself
    with db.connection() as conn:
        cur = conn.execute(
            """
            INSERT INTO trace_spans (trace_id, span_id, parent_span_id, run_id, tenant_id, name,
                                     started_at, duration_ms, kind, status, service, unpriced,
                                     attributes)
            SELECT x.trace_id, x.span_id, x.parent_span_id, x.run_id, x.tenant_id, x.name,
                   x.started_at, x.duration_ms, x.kind, x.status, x.service, x.unpriced,
                   x.attributes
            FROM json_to_recordset(%s::json) AS x(
                trace_id text, span_id text, parent_span_id text, run_id text, tenant_id text,
                name text, started_at timestamptz, duration_ms double precision, kind text,
                status text, service text, unpriced boolean, attributes jsonb)
            JOIN tenants t ON t.tenant_id = x.tenant_id
            ON CONFLICT (trace_id, span_id) DO NOTHING
            RETURNING trace_id, span_id
            """,
            (body,),
        )
        return {(row[0], row[1]) for row in cur.fetchall()}


def known_tenants(db: Database, tenant_ids: set[str]) -> set[str]:
    """Return the ids among ``tenant_ids`` of tenants that exist."""
    if not tenant_ids:
        return set()
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT tenant_id FROM tenants WHERE tenant_id = ANY(%s)", (sorted(tenant_ids),)
        ).fetchall()
    return {r[0] for r in rows}


def forget_spans(db: Database, keys: Sequence[tuple[str, str]]) -> None:
    """Delete the spans ``keys`` (trace id, span id): stored, then refused by the ledger."""
    if not keys:
        return
    with db.connection() as conn:
        conn.execute(
            "DELETE FROM trace_spans t USING unnest(%s::text[], %s::text[]) AS k(tr, sp)"
            " WHERE t.trace_id = k.tr AND t.span_id = k.sp",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )


def spans_of_run(db: Database, run_id: str) -> list[dict[str, Any]]:
    """Return the stored spans of ``run_id`` in start order (for the run page)."""
    with db.connection() as conn:
        cur = conn.execute(
            "SELECT trace_id, span_id, parent_span_id, name, started_at, duration_ms, kind,"
            " status, service, unpriced, attributes FROM trace_spans WHERE run_id = %s"
            " ORDER BY started_at, span_id",
            (run_id,),
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
