"""Console helpers: log a test client in, read the CSRF token, seed a small ledger."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from _support import event

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def login(client: Any, token: str) -> str:
    """Log ``client`` in with ``token``; return the session's CSRF token."""
    resp = client.post("/login", data={"token": token, "csrf_token": login_csrf(client)})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return csrf_of(client)


def login_csrf(client: Any) -> str:
    """Open the login form and return its CSRF token (its cookie stays in the client)."""
    found = CSRF_RE.search(client.get("/login").get_data(as_text=True))
    assert found, "no CSRF token on the login form"
    return found.group(1)


def csrf_of(client: Any) -> str:
    """Return the CSRF token rendered into the viewer's pages."""
    page = client.get("/export").get_data(as_text=True)
    found = CSRF_RE.search(page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed_run(
    client: Any, agent_token: str, *, tenant: str, project: str, run: str, phase: str = "build",
    role: str = "implementer", cost: str = "0.25", model: str = "gpt-4.1", fail: str | None = None,
    playbook: str = "landing", at: datetime | None = None, tokens: tuple[int, int] = (100, 40),
) -> None:  # fmt: skip
    """Store one run through the ingest API: started, a model call's cost, then its end."""
    at = at or datetime.now(UTC) - timedelta(seconds=5)
    env = {"tenant_id": tenant, "project_id": project, "run_id": run, "phase": phase,
           "role": role, "playbook": playbook}  # fmt: skip
    events = [
        event("phase_entered", **env, occurred_at=(at - timedelta(seconds=1)).isoformat()),
        event("run_started", **env, occurred_at=at.isoformat(), trace_id="ab" * 16),
        event("artifact_written", **env, occurred_at=(at + timedelta(seconds=1)).isoformat(),
              artifact_path="site/index.html", artifact_version=2),
        event("run_finished" if fail is None else "run_failed", **env,
              occurred_at=(at + timedelta(seconds=2)).isoformat(), cost_usd=cost, model=model,
              tokens_in=tokens[0], tokens_out=tokens[1],
              payload={} if fail is None else {"reason": fail},
              **({} if fail is None else {"artifact_path": "site/index.html",
                                           "artifact_version": 2})),
    ]  # fmt: skip
    resp = client.post("/v1/events", json={"events": events}, headers=bearer(agent_token))
    body = resp.get_json()
    assert resp.status_code == 200 and body["rejected"] == 0, body
