"""Telemetry the SDK stores in the ledger: ``POST /v1/prompt-audit`` (redacted prompts)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from runledger.control._auth import require
from runledger.control._batch import (
    batch_counts,
    batch_records,
    batch_response,
    read_batch,
    unknown_tenant,
)
from runledger.control._requests import PromptAuditRecord
from runledger.redact import default_redactor
from runledger.store.prompt_audit import PromptRow, store_prompts

__all__ = ["MAX_AUDIT_RECORDS", "bp"]

bp = Blueprint("telemetry", __name__, url_prefix="/v1")

MAX_AUDIT_RECORDS = 500
"""Largest number of prompt-audit records one request may carry."""


@bp.post("/prompt-audit")
@require("agent", "admin")
def post_prompt_audit() -> Response:
    """Store redacted prompts; answer one result per record, in order.

    Re-sending a record is safe: a record with the same run, time and prompt is a duplicate.
    The text is redacted again here, so a client with older rules cannot leak a secret.
    """
    raw = read_batch("records", MAX_AUDIT_RECORDS)
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, PromptAuditRecord]] = []
    for i, rec in batch_records(raw, PromptAuditRecord.model_validate, results):
        results.append({"index": i, "status": "pending"})
        valid.append((i, rec))
    if valid:
        redactor = default_redactor()
        rows = [
            PromptRow(
                run_id=rec.run_id, tenant_id=rec.tenant_id, model=rec.model,
                prompt=redactor.text(rec.prompt),
                response=redactor.text(rec.response) if rec.response is not None else None,
                created_at=rec.created_at,
            )
            for _, rec in valid
        ]  # fmt: skip
        statuses = store_prompts(current_app.extensions["runledger.db"], rows)
        for (i, rec), status in zip(valid, statuses, strict=True):
            if status == "unknown_tenant":
                results[i] = unknown_tenant(i, rec.tenant_id)
            else:
                results[i] = {"index": i, "status": status, "audit_id": rec.audit_id}
    return batch_response(results, batch_counts(res["status"] for res in results))
