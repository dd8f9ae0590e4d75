"""Rerun requests: an admin asks in the console, a Coordinator claims and runs them.

The round trip (docs/console.md): ``POST /v1/runs/<run_id>/rerun`` queues a request;
``Ledger.claim_rerun(tenant)`` claims the oldest one (``POST /v1/tenants/<t>/reruns/claim``)
and gets the new run's id and attempt; ``Ledger.rerun(request)`` returns that run, which
carries ``runledger.rerun_of`` and ``runledger.rerun_request`` on its span and logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

__all__ = ["RerunError", "RerunRequest", "claim_rerun"]


class RerunError(RuntimeError):
    """The control service refused or could not answer a rerun claim."""


@dataclass(frozen=True)
class RerunRequest:
    """A claimed rerun: the step to run again and the id its new run must use."""

    request_id: int
    run_id: str
    tenant_id: str
    project_id: str
    phase: str
    role: str
    playbook: str | None
    attempt: int
    reason: str
    requested_by: str
    new_run_id: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RerunRequest:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def claim_rerun(
    base_url: str, token: str, tenant_id: str, *, holder: str, timeout: float = 5.0
) -> RerunRequest | None:
    """Claim the tenant's oldest pending rerun for ``holder``; None when none waits."""
    url = f"{base_url.rstrip('/')}/v1/tenants/{tenant_id}/reruns/claim"
    try:
        resp = requests.post(
            url, json={"holder": holder}, timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
    except requests.RequestException as exc:
        raise RerunError(f"cannot reach the control service at {base_url}: {exc}") from exc
    if resp.status_code == 204:
        return None
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200:
        raise RerunError(
            f"rerun claim refused ({resp.status_code}): {body.get('error', resp.reason)}"
        )
    return RerunRequest.from_json(body)
