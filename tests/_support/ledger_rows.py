"""Readers of what the ledger stored for a run: its events and its runs row."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

Sql = Callable[..., list[tuple[Any, ...]]]


def run_events(sql: Sql, run_id: str) -> list[dict[str, Any]]:
    """Return the stored events of a run, oldest first."""
    rows = sql(
        "SELECT type, cost_usd, tokens_in, tokens_out, model, payload, artifact_path,"
        " artifact_version FROM events WHERE run_id = %s ORDER BY seq",
        run_id,
    )
    keys = ("type", "cost", "tokens_in", "tokens_out", "model", "payload", "artifact_path",
            "artifact_version")  # fmt: skip
    return [dict(zip(keys, row, strict=True)) for row in rows]


def one(events: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    """Return the only event of ``type_``."""
    found = [e for e in events if e["type"] == type_]
    assert len(found) == 1, [e["type"] for e in events]
    return found[0]


def run_row(sql: Sql, run_id: str) -> dict[str, Any]:
    rows = sql(
        "SELECT status, tokens_in, tokens_out, cost_usd, model, error FROM runs WHERE run_id = %s",
        run_id,
    )
    assert rows, f"run {run_id} is not in the ledger"
    keys = ("status", "tokens_in", "tokens_out", "cost", "model", "error")
    return dict(zip(keys, rows[0], strict=True))


def event_cost(sql: Sql, tenant: str) -> Decimal:
    """Return the sum of the cost of every stored event of ``tenant``."""
    return Decimal(sql("SELECT COALESCE(sum(cost_usd), 0) FROM events WHERE tenant_id = %s",
                       tenant)[0][0])  # fmt: skip
