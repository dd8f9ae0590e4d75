"""Ledger events of a support impersonation: ``impersonation_started`` and ``_ended``.

An impersonation is recorded as a run of role ``support`` in the tenant's ``console``
project (phase ``impersonation``): started with the first event, finished with the last, so
the ledger never holds a run left open by it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import current_app

from runledger.events import validate_batch
from runledger.store import Ingestor
from runledger.store.sessions import Session

__all__ = ["CONSOLE_PROJECT", "emit"]

CONSOLE_PROJECT = "console"
_ACTOR_RE = re.compile(r"[^A-Za-z0-9._:-]")


def emit(kind: str, *, tenant: str, actor: str, reason: str | None, session: Session) -> None:
    """Store the impersonation's events (and its run's start or finish) through ingest."""
    run_id = f"impersonation-{session.session_digest.hex()[:16]}"
    actor_id = (_ACTOR_RE.sub("-", actor).strip("-") or "support")[:128]
    now = datetime.now(UTC).isoformat()
    base: dict[str, Any] = {
        "tenant_id": tenant, "project_id": CONSOLE_PROJECT, "run_id": run_id,
        "phase": "impersonation", "role": "support", "occurred_at": now,
    }  # fmt: skip
    payload: dict[str, Any] = {"actor": actor_id}
    if reason:
        payload["reason"] = reason[:200]
    raw = [{**base, "event_id": str(uuid.uuid4()), "type": kind, "payload": payload}]
    if kind == "impersonation_started":
        raw.insert(0, {**base, "event_id": str(uuid.uuid4()), "type": "run_started"})
    else:
        raw.append({**base, "event_id": str(uuid.uuid4()), "type": "run_finished"})
    models = validate_batch(raw)
    bad = [m for m in models if isinstance(m, list)]
    if bad:
        raise ValueError(f"impersonation event invalid: {bad}")
    ingestor: Ingestor = current_app.extensions["runledger.ingestor"]
    ingestor.ingest(models)
