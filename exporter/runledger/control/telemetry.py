"""Telemetry the SDK stores in the ledger: ``POST /v1/prompt-audit`` (redacted prompts)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from flask import Blueprint, Response, current_app
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from runledger.control._auth import require
from runledger.control._batch import batch_counts, batch_response, read_batch
from runledger.events import Ident, ModelName
from runledger.redact import default_redactor

__all__ = ["MAX_AUDIT_RECORDS", "MAX_PROMPT_CHARS", "bp"]

bp = Blueprint("telemetry", __name__, url_prefix="/v1")

MAX_AUDIT_RECORDS = 500
"""Largest number of prompt-audit records one request may carry."""

MAX_PROMPT_CHARS = 64 * 1024
"""Longest prompt or response stored; longer text is refused, not cut."""

_FUTURE_SKEW = timedelta(minutes=5)


class PromptAuditRecord(BaseModel):
    """One redacted prompt (and response) of a run."""

    model_config = ConfigDict(extra="forbid")

    audit_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    tenant_id: Ident
    run_id: Ident
    model: ModelName | None = None
    prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
    response: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)] | None = None
    created_at: AwareDatetime = Field(description="When the prompt was sent, with a UTC offset.")


def _lock_key(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big", signed=True)


@bp.post("/prompt-audit")
@require("agent", "admin")
def post_prompt_audit() -> Response:
    """Store redacted prompts; answer one result per record, in order.

    Re-sending a record is safe: a record with the same run, time and prompt is a duplicate.
    The text is redacted again here, so a client with older rules cannot leak a secret.
    """
    raw = read_batch("records", MAX_AUDIT_RECORDS)
    redactor = default_redactor()
    now = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, PromptAuditRecord]] = []
    for i, item in enumerate(raw):
        try:
            rec = PromptAuditRecord.model_validate(item)
        except ValidationError as exc:
            errors = [
                {
                    "field": f"records[{i}]." + ".".join(str(p) for p in e["loc"]),
                    "message": e["msg"],
                }
                for e in exc.errors(include_url=False, include_input=False)
            ]
            results.append({"index": i, "status": "rejected", "errors": errors})
            continue
        if rec.created_at > now + _FUTURE_SKEW:
            results.append(
                {"index": i, "status": "rejected", "errors": [
                    {"field": f"records[{i}].created_at",
                     "message": "is in the future (more than 5 minutes ahead of the server clock)"}
                ]}
            )  # fmt: skip
            continue
        results.append({"index": i, "status": "pending"})
        valid.append((i, rec))
    if valid:
        db = current_app.extensions["runledger.db"]
        with db.connection() as conn:
            tenants = {
                r[0]
                for r in conn.execute(
                    "SELECT tenant_id FROM tenants WHERE tenant_id = ANY(%s)",
                    (sorted({rec.tenant_id for _, rec in valid}),),
                ).fetchall()
            }
            for run_id in sorted({rec.run_id for _, rec in valid}):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(run_id),))
            for i, rec in valid:
                if rec.tenant_id not in tenants:
                    results[i] = {"index": i, "status": "rejected", "errors": [
                        {"field": f"records[{i}].tenant_id",
                         "message": f"unknown tenant {rec.tenant_id!r}"}
                    ]}  # fmt: skip
                    continue
                prompt = redactor.text(rec.prompt)
                response = redactor.text(rec.response) if rec.response is not None else None
                row = conn.execute(
                    "INSERT INTO prompt_audit (run_id, tenant_id, model, prompt_redacted,"
                    " response_redacted, created_at)"
                    " SELECT %(run)s, %(tenant)s, %(model)s, %(prompt)s, %(response)s, %(at)s"
                    " WHERE NOT EXISTS (SELECT 1 FROM prompt_audit WHERE run_id = %(run)s"
                    " AND created_at = %(at)s AND prompt_redacted = %(prompt)s)"
                    " RETURNING prompt_id",
                    {"run": rec.run_id, "tenant": rec.tenant_id, "model": rec.model,
                     "prompt": prompt, "response": response, "at": rec.created_at},
                ).fetchone()  # fmt: skip
                results[i] = {
                    "index": i,
                    "status": "accepted" if row else "duplicate",
                    "audit_id": rec.audit_id,
                }
    return batch_response(results, batch_counts(res["status"] for res in results))
