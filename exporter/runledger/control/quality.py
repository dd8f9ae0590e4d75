"""Quality API: artifact snapshots for sampling and drift, Publisher freeze state, unfreeze.

``POST /v1/artifacts`` stores the (redacted) content agents send with their artifacts;
``GET /v1/playbooks/<playbook>/freeze`` is what the SDK asks before a Publisher ships;
``POST /v1/playbooks/<playbook>/unfreeze`` lifts a freeze with a reason (admin, audited).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app

from runledger.control._auth import current_principal, require
from runledger.control._batch import (
    batch_counts,
    batch_records,
    batch_response,
    json_response,
    parse_body,
    read_batch,
    rejected,
    unknown_tenant,
)
from runledger.control._errors import ApiError
from runledger.control._requests import ArtifactSnapshotRecord, Unfreeze
from runledger.events import MAX_SNAPSHOT_CHARS
from runledger.quality._features import features, sniff_media_type
from runledger.redact import default_redactor
from runledger.store.console_actions import Actor
from runledger.store.quality import (
    Freeze,
    SnapshotRow,
    active_freeze,
    playbook_quality,
    store_snapshots,
    unfreeze_publisher,
)
from runledger.validation import FieldError

__all__ = ["MAX_SNAPSHOT_RECORDS", "bp", "lift_freeze"]

bp = Blueprint("quality", __name__, url_prefix="/v1")

MAX_SNAPSHOT_RECORDS = 500
"""Largest number of artifact snapshots one request may carry (the SDK sends up to 500
records of a kind per batch, within 4 MiB)."""

_PLAYBOOK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@bp.post("/artifacts")
@require("agent", "admin")
def post_artifacts() -> Response:
    """Store artifact contents (redacted again here); answer one result per record, in order.

    Re-sending is safe: a snapshot whose id or artifact version is stored is a duplicate.
    """
    raw = read_batch("records", MAX_SNAPSHOT_RECORDS)
    redactor = default_redactor()
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, SnapshotRow]] = []
    for i, rec in batch_records(raw, ArtifactSnapshotRecord.model_validate, results):
        content = redactor.text(rec.content)
        if len(content) > MAX_SNAPSHOT_CHARS:
            problem = FieldError(
                f"records[{i}].content",
                f"is {len(content)} characters once redacted; the limit is {MAX_SNAPSHOT_CHARS}",
            )
            results.append(rejected(i, [problem]))
            continue
        media = rec.media_type or sniff_media_type(content)
        results.append({"index": i, "status": "pending"})
        valid.append(
            (
                i,
                SnapshotRow(
                    snapshot_id=str(rec.snapshot_id),
                    tenant_id=rec.tenant_id,
                    project_id=rec.project_id,
                    run_id=rec.run_id,
                    playbook=rec.playbook,
                    phase=rec.phase,
                    role=rec.role,
                    artifact_path=redactor.text(rec.artifact_path, limit=512),
                    artifact_version=rec.artifact_version,
                    media_type=media,
                    content=content,
                    features=features(content, media),
                    created_at=rec.created_at,
                ),
            )
        )
    if valid:
        statuses = store_snapshots(current_app.extensions["runledger.db"], [r for _, r in valid])
        for (i, row), status in zip(valid, statuses, strict=True):
            if status == "unknown_tenant":
                results[i] = unknown_tenant(i, row.tenant_id)
            else:
                results[i] = {"index": i, "status": status, "snapshot_id": row.snapshot_id}
    return batch_response(results, batch_counts(res["status"] for res in results))


def _playbook(playbook: str) -> str:
    if not _PLAYBOOK_RE.match(playbook):
        problem = FieldError(
            "playbook", "must be 1-64 letters, digits, '_' or '-', starting with a letter"
        )
        raise ApiError(400, f"{problem.field} {problem.message}", fields=[problem])
    return playbook.lower()  # playbooks are stored lower-case (events.Slug)


@bp.get("/playbooks/<playbook>/freeze")
@require("agent", "admin", "owner", "support", "finance")
def freeze_state(playbook: str) -> Response:
    """Say whether the playbook's Publisher is frozen, and why (what the SDK asks)."""
    name = _playbook(playbook)
    with current_app.extensions["runledger.db"].connection() as conn:
        freeze = active_freeze(conn, name)
    return json_response(
        {"playbook": name, "frozen": freeze is not None,
         "freeze": freeze.as_dict() if freeze else None}
    )  # fmt: skip


@bp.get("/playbooks/<playbook>/quality")
@require("admin", "support")
def quality_state(playbook: str) -> Response:
    """Show why a playbook is (or is not) frozen: the freeze, the latest sample with every
    sampled artifact's verdict (failures first), and the latest drift check's tests."""
    name = _playbook(playbook)
    with current_app.extensions["runledger.db"].connection() as conn:
        freeze = active_freeze(conn, name)
        found = playbook_quality(conn, name)
    return json_response(
        {"playbook": name, "frozen": freeze is not None,
         "freeze": freeze.as_dict() if freeze else None, **found}
    )  # fmt: skip


def lift_freeze(playbook: str, reason: str, actor: Actor) -> Freeze:
    """Lift the playbook's Publisher freeze with a reason, audited; 409 when not frozen.
    Admins only (the callers check the role). The API and the console call this."""
    name = _playbook(playbook)
    with current_app.extensions["runledger.db"].connection() as conn:
        lifted = unfreeze_publisher(
            conn, playbook=name, actor=actor.label, role=actor.role, reason=reason
        )
    if lifted is None:
        raise ApiError(409, f"the Publisher of playbook {name!r} is not frozen")
    return lifted


@bp.post("/playbooks/<playbook>/unfreeze")
@require("admin")
def unfreeze(playbook: str) -> Response:
    """Lift the playbook's Publisher freeze with a reason; audited."""
    name = _playbook(playbook)
    req = parse_body(Unfreeze)
    principal = current_principal()
    lifted = lift_freeze(name, req.reason, Actor(principal.label, principal.role))
    return json_response({"playbook": name, "frozen": False, "lifted": lifted.as_dict()})
