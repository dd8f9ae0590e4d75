"""Helpers of the quality tests: proofs and their pages through the real control-service API."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from runledger.demo.validator import render_site

HERO_ONLY_PAGE = (
    '<!doctype html><html><head><title>Acme</title></head><body><section id="hero">'
    "<h1>Acme</h1><p>Friendly people, fair prices and good work.</p>{extra}"
    '<a class="cta" href="#contact">Book now</a></section></body></html>'
)
"""A page a fast review passes (hero with a call to action) but strict mode fails: it lacks
the playbook's required sections. ``{extra}`` goes inside the hero."""


def sampling_config(min_sampled: int) -> dict[str, Any]:
    """The quality config of the sampling tests: the demo Validator, every proof sampled."""
    return {
        "validator": "runledger.demo.validator:validate",
        "sample": {"rate": 1.0, "size": 50, "min_size": min_sampled, "threshold": 0.2,
                   "min_sampled": min_sampled},
    }  # fmt: skip


def post_proofs(
    client: Any,
    token: str,
    tenant: str,
    playbook: str,
    n: int,
    page: Callable[[int], str] | None = None,
    at: datetime | None = None,
) -> None:
    """Store ``n`` pages (good ones by default) and their ``proof_requested`` events, made
    ``at`` (default now)."""
    rng = random.Random(1)
    now = at or datetime.now(UTC)
    records, events = [], []
    for i in range(n):
        project, path = f"{tenant}-q{i}", f"{tenant}-q{i}/index-{now:%Y%m%d}.html"
        content = page(i) if page else render_site(playbook, "Acme", rng, flaw_rate=0)
        records.append({
            "snapshot_id": str(uuid.uuid4()), "tenant_id": tenant, "project_id": project,
            "run_id": f"{project}-build", "playbook": playbook, "phase": "build",
            "role": "implementer", "artifact_path": path, "artifact_version": 1,
            "content": content, "created_at": now.isoformat(),
        })  # fmt: skip
        events.append({
            "event_id": str(uuid.uuid4()), "type": "proof_requested", "tenant_id": tenant,
            "project_id": project, "run_id": f"{project}-publish", "phase": "publish",
            "role": "publisher", "playbook": playbook, "occurred_at": now.isoformat(),
            "artifact_path": path, "artifact_version": 1,
            "payload": {"proof_id": f"{project}-proof-{now:%Y%m%d}",
                        "due_at": (now + timedelta(days=2)).isoformat()},
        })  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    resp = client.post("/v1/artifacts", json={"records": records}, headers=auth)
    assert resp.status_code == 200 and resp.json["accepted"] == n, resp.json
    resp = client.post("/v1/events", json={"events": events}, headers=auth)
    assert resp.status_code == 200 and resp.json["accepted"] == n, resp.json
