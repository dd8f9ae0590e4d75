"""Telemetry the SDK stores in the ledger: ``POST /v1/prompt-audit`` (redacted prompts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app
from pydantic import ValidationError

from runledger.control._auth import require
from runledger.control._batch import batch_counts, batch_response, read_batch
from runledger.control._requests import PromptAuditRecord
from runledger.redact import default_redactor
from runledger.store.prompt_audit import PromptRow, store_prompts
from runledger.validation import FieldError, field_errors

__all__ = ["MAX_AUDIT_RECORDS", "bp"]

bp = Blueprint("telemetry", __name__, url_prefix="/v1")

MAX_AUDIT_RECORDS = 500
"""Largest number of prompt-audit records one request may carry."""

_FUTURE_SKEW = timedelta(minutes=5)


def _rejected(index: int, errors: list[FieldError]) -> dict[str, Any]:
    return {"index": index, "status": "rejected", "errors": [e.as_dict() for e in errors]}


@bp.post("/prompt-audit")
@require("agent", "admin")
def post_prompt_audit() -> Response:
    """Store redacted prompts; answer one result per record, in order.

    Re-sending a record is safe: a record with the same run, time and prompt is a duplicate.
    The text is redacted again here, so a client with older rules cannot leak a secret.
    """
    raw = read_batch("records", MAX_AUDIT_RECORDS)
    now = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, PromptAuditRecord]] = []
    for i, item in enumerate(raw):
        try:
            rec = PromptAuditRecord.model_validate(item)
        except ValidationError as exc:
            results.append(_rejected(i, field_errors(exc, prefix=f"records[{i}]")))
            continue
        if rec.created_at > now + _FUTURE_SKEW:
            problem = "is in the future (more than 5 minutes ahead of the server clock)"
            results.append(_rejected(i, [FieldError(f"records[{i}].created_at", problem)]))
            continue
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
                problem = f"unknown tenant {rec.tenant_id!r}"
                results[i] = _rejected(i, [FieldError(f"records[{i}].tenant_id", problem)])
            else:
                results[i] = {"index": i, "status": status, "audit_id": rec.audit_id}
    return batch_response(results, batch_counts(res["status"] for res in results))
