"""Console actions seen by the SDK against the real control service (gunicorn):
a paused tenant's next run is refused while its run in flight finishes, and a rerun
requested in the console is claimed and run by a Coordinator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from _support import ControlService
from _support.ledger_rows import Sql, run_row
from runledger.cost import TenantPaused
from runledger.sdk import Ledger


def _post(control: ControlService, path: str, token: str, body: dict) -> requests.Response:
    return requests.post(control.url + path, json=body, timeout=10,
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def test_paused_tenant_refuses_new_runs_and_lets_runs_in_flight_finish(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_token: Callable[..., str], make_ledger: Callable[..., Ledger], sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "5"))
    admin = make_token("admin")
    in_flight = ledger.start_run("acme", "proj-1", "build", "implementer")
    with in_flight.model_call("gpt-4.1", prompt_tokens=100, max_tokens=50) as call:
        call.record(tokens_in=100, tokens_out=50)

    assert _post(control, "/v1/tenants/acme/pause", admin, {"reason": "card declined"}).ok
    with pytest.raises(TenantPaused) as refused:
        ledger.start_run("acme", "proj-2", "build", "implementer")
    assert "tenant 'acme' is paused by an admin: no new runs" in str(refused.value)
    assert "runs already in flight finish" in str(refused.value)

    # The run that was already going keeps its lease and finishes.
    with in_flight.model_call("gpt-4.1", prompt_tokens=100, max_tokens=50) as call:
        call.record(tokens_in=100, tokens_out=50)
    in_flight.finish()
    assert ledger.flush(20)
    assert run_row(sql, in_flight.run_id)["status"] == "succeeded"
    assert sql("SELECT count(*) FROM runs WHERE project_id = 'proj-2'") == [(0,)]

    assert _post(control, "/v1/tenants/acme/resume", admin, {"reason": "paid"}).ok
    with ledger.run("acme", "proj-2", "build", "implementer") as run:
        with run.model_call("gpt-4.1", prompt_tokens=10, max_tokens=5) as call:
            call.record(tokens_in=10, tokens_out=5)
    assert ledger.flush(20)
    assert run_row(sql, run.run_id)["status"] == "succeeded"


def test_rerun_round_trip_from_console_to_coordinator(
    control: ControlService, agent_token: Callable[[str, str], str],
    make_token: Callable[..., str], make_ledger: Callable[..., Ledger], sql: Sql,
) -> None:  # fmt: skip
    ledger = make_ledger(control.url, agent_token("acme", "5"))
    with pytest.raises(RuntimeError):
        with ledger.run("acme", "proj-1", "validate", "validator", run_id="r-7",
                        playbook="landing"):  # fmt: skip
            raise RuntimeError("alt text missing")
    assert ledger.flush(20)
    assert ledger.claim_rerun("acme") is None  # nothing asked yet

    support = make_token("support")
    asked = _post(control, "/v1/runs/r-7/rerun", support, {"reason": "artifact fixed"})
    assert asked.status_code == 201 and asked.json()["status"] == "pending"
    again = _post(control, "/v1/runs/r-7/rerun", support, {"reason": "twice"})
    assert again.status_code == 200 and again.json()["request_id"] == asked.json()["request_id"]

    request = ledger.claim_rerun("acme", holder="coordinator-1")
    assert request is not None and request.run_id == "r-7" and request.reason == "artifact fixed"
    assert ledger.claim_rerun("acme") is None  # claimed once only
    with ledger.rerun(request) as run:
        with run.model_call("gpt-4.1", prompt_tokens=10, max_tokens=5) as call:
            call.record(tokens_in=10, tokens_out=5)
    assert ledger.flush(20)

    new = run_row(sql, request.new_run_id)
    assert new["status"] == "succeeded"
    assert sql(
        "SELECT phase, attempt, cost_usd > 0 FROM runs WHERE run_id = %s", request.new_run_id
    ) == [("validate", 2, True)]
    assert sql("SELECT status, claimed_by, new_run_id FROM rerun_requests") == [
        ("claimed", "coordinator-1", "r-7-rerun-1")
    ]
    actions = sql("SELECT action, actor_role FROM audit_log WHERE action LIKE 'rerun%%'"
                  " ORDER BY audit_id")  # fmt: skip
    assert actions == [("rerun_requested", "support"), ("rerun_claimed", "agent")]
