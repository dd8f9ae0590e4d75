"""``POST /v1/prompt-audit``: authorisation, tenancy and the errors a client sees."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Sql = Callable[..., list[tuple[Any, ...]]]


def _record(**fields: Any) -> dict[str, Any]:
    base = {
        "audit_id": "a-1",
        "tenant_id": "acme",
        "run_id": "run-1",
        "model": "gpt-4.1",
        "prompt": "hello",
        "created_at": datetime.now(UTC).isoformat(),
    }
    base.update(fields)
    return base


def test_prompt_audit_requires_an_agent_or_admin_token_of_the_tenant(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    make_tenant("globex")
    body = {"records": [_record()]}
    assert client.post("/v1/prompt-audit", json=body).status_code == 401
    owner = make_token("owner", "acme")
    resp = client.post("/v1/prompt-audit", json=body, headers={"Authorization": f"Bearer {owner}"})
    assert resp.status_code == 403
    assert resp.json["error"] == "role 'owner' may not do this; allowed: agent, admin"
    other = make_token("agent", "globex")
    resp = client.post("/v1/prompt-audit", json=body, headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 403
    assert resp.json == {
        "error": "records[0].tenant_id: this token may write only tenant 'globex'; "
        "nothing was stored",
        "fields": [
            {
                "field": "records[0].tenant_id",
                "message": "this token may write only tenant 'globex'",
            }
        ],
    }


def test_prompt_audit_answers_one_result_per_record_and_redacts_again(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme")
    token = make_token("admin")
    headers = {"Authorization": f"Bearer {token}"}
    records = [
        _record(prompt="mail bob@example.com"),
        _record(tenant_id="ghost"),
        _record(created_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        _record(prompt=None),
    ]
    resp = client.post("/v1/prompt-audit", json={"records": records}, headers=headers)
    assert resp.status_code == 200
    results = resp.json["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected"]
    assert results[1]["errors"] == [
        {"field": "records[1].tenant_id", "message": "unknown tenant 'ghost'"}
    ]
    assert results[2]["errors"] == [
        {
            "field": "records[2].created_at",
            "message": "is in the future (more than 5 minutes ahead of the server clock)",
        }
    ]
    assert results[3]["errors"] == [{"field": "records[3].prompt", "message": "must be a string"}]
    assert sql("SELECT prompt_redacted FROM prompt_audit") == [("mail [REDACTED:email]",)]
    again = client.post("/v1/prompt-audit", json={"records": records[:1]}, headers=headers)
    assert again.json["results"][0]["status"] == "duplicate"


def test_prompt_audit_body_errors_name_the_problem(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    headers = {"Authorization": f"Bearer {make_token('agent', 'acme')}"}
    resp = client.post("/v1/prompt-audit", data="x", headers=headers, content_type="text/plain")
    assert (resp.status_code, resp.json["error"]) == (415, "send the body as application/json")
    resp = client.post("/v1/prompt-audit", json={"events": []}, headers=headers)
    assert (resp.status_code, resp.json["error"]) == (
        400,
        'body must be an object {"records": [...]}',
    )
    resp = client.post("/v1/prompt-audit", json={"records": []}, headers=headers)
    assert resp.json == {
        "error": "records must be a non-empty array",
        "fields": [{"field": "records", "message": "must be a non-empty array"}],
    }
    resp = client.post("/v1/prompt-audit", json={"records": [_record()] * 501}, headers=headers)
    assert (resp.status_code, resp.json["error"]) == (
        413,
        "batch of 501 records; the limit is 500 per request",
    )
    resp = client.post(
        "/v1/prompt-audit", data="{", headers=headers, content_type="application/json"
    )
    assert resp.status_code == 400 and resp.json["error"].startswith("body is not valid JSON")
