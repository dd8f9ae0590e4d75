"""The prompt audit: redacted prompts and responses of runs, stored once each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from runledger.store._database import Database
from runledger.store.locks import lock_runs
from runledger.store.tenants import known_tenants

__all__ = ["PromptRow", "PromptStatus", "store_prompts"]

PromptStatus = Literal["accepted", "duplicate", "unknown_tenant"]


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One already redacted prompt (and response) of a run."""

    run_id: str
    tenant_id: str
    model: str | None
    prompt: str
    response: str | None
    created_at: datetime


def store_prompts(db: Database, rows: Sequence[PromptRow]) -> list[PromptStatus]:
    """Store ``rows`` in one transaction; return each row's status, in order.

    A row with the same run, time and prompt as a stored one is a duplicate; a row of a
    tenant that does not exist is not stored.
    """
    with db.connection() as conn:
        known = known_tenants(conn, (row.tenant_id for row in rows))
        lock_runs(conn, [row.run_id for row in rows])
        statuses: list[PromptStatus] = []
        for row in rows:
            if row.tenant_id not in known:
                statuses.append("unknown_tenant")
                continue
            inserted = conn.execute(
                "INSERT INTO prompt_audit (run_id, tenant_id, model, prompt_redacted,"
                " response_redacted, created_at)"
                " SELECT %(run)s, %(tenant)s, %(model)s, %(prompt)s, %(response)s, %(at)s"
                " WHERE NOT EXISTS (SELECT 1 FROM prompt_audit WHERE run_id = %(run)s"
                " AND created_at = %(at)s AND prompt_redacted = %(prompt)s)"
                " RETURNING prompt_id",
                {"run": row.run_id, "tenant": row.tenant_id, "model": row.model,
                 "prompt": row.prompt, "response": row.response, "at": row.created_at},
            ).fetchone()  # fmt: skip
            statuses.append("accepted" if inserted else "duplicate")
    return statuses
