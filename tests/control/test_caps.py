"""The caps API on the real control service: leases, tenant isolation, audited raises."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests

from _support.clock import Clock
from runledger.cost.lease import HttpLeaseTransport, TenantBudget, TenantCapReached

Sql = Callable[..., list[tuple[Any, ...]]]
D = Decimal


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_agent_draws_a_lease_over_http_until_the_cap(
    control_server: str, make_tenant: Callable[..., str], make_token: Callable[..., str],
    sql: Sql,
) -> None:  # fmt: skip
    make_tenant("acme", "1")
    token = make_token("agent", "acme")
    budget = TenantBudget(HttpLeaseTransport(control_server, token), "acme", holder="run-1",
                          chunk_usd=D("0.25"))  # fmt: skip
    spent = D(0)
    try:
        while True:
            budget.reserve(D("0.05")).settle(D("0.04"))
            spent += D("0.04")
    except TenantCapReached as exc:
        assert "tenant 'acme' daily cap reached" in str(exc)
        assert "POST /v1/caps/acme/raises" in str(exc)
    budget.close()
    assert spent == D("0.96")  # the next 0.05 estimate no longer fits under $1
    assert sql("SELECT settled_usd, reserved_usd FROM caps") == [(D("0.96"), 0)]
    status = requests.get(f"{control_server}/v1/caps/acme", headers=auth(token), timeout=5)
    assert status.status_code == 200
    body = status.json()
    assert (body["cap_usd"], body["spend_usd"], body["at_80"], body["at_100"]) == (
        "1.000000000", "0.960000000", True, False)  # fmt: skip


def test_blocked_lease_answer_is_402_with_the_message(
    control_server: str, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme", "1")
    token = make_token("agent", "acme")
    resp = requests.post(
        f"{control_server}/v1/caps/leases", headers=auth(token), timeout=5,
        json={"tenant_id": "acme", "holder": "r", "min_usd": "2"},
    )  # fmt: skip
    assert resp.status_code == 402
    assert resp.json()["status"] == "blocked"
    assert "daily cap reached: spent $0.0000 of its $1.00 daily cap" in resp.json()["error"]


def test_tenants_never_see_or_touch_each_other(
    control_server: str, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme", "5")
    make_tenant("globex", "5")
    acme_agent = make_token("agent", "acme")
    globex_agent = make_token("agent", "globex")
    globex_owner = make_token("owner", "globex")
    resp = requests.post(
        f"{control_server}/v1/caps/leases", headers=auth(globex_agent), timeout=5,
        json={"tenant_id": "acme", "holder": "r", "min_usd": "0.1"},
    )  # fmt: skip
    assert resp.status_code == 403
    assert resp.json()["error"] == "this token may act only for tenant 'globex'"
    for path in ("/v1/caps/acme", "/v1/caps/acme/raises"):
        resp = requests.get(f"{control_server}{path}", headers=auth(globex_owner), timeout=5)
        assert resp.status_code == 403
    lease = requests.post(
        f"{control_server}/v1/caps/leases", headers=auth(acme_agent), timeout=5,
        json={"tenant_id": "acme", "holder": "r", "min_usd": "0.1"},
    ).json()  # fmt: skip
    # Another tenant's agent cannot settle or close acme's lease, nor learn that it exists.
    for action in ("sync", "close"):
        resp = requests.post(
            f"{control_server}/v1/caps/leases/{lease['lease_id']}/{action}",
            headers=auth(globex_agent), json={"spent_usd": "0"}, timeout=5,
        )  # fmt: skip
        assert resp.status_code == 404
        assert resp.json()["error"] == "no such lease or tenant"
    # Owners may read their own cap but not raise it.
    assert (
        requests.get(
            f"{control_server}/v1/caps/globex", headers=auth(globex_owner), timeout=5
        ).status_code
        == 200
    )
    resp = requests.post(
        f"{control_server}/v1/caps/globex/raises/temporary", headers=auth(globex_owner),
        json={"reason": "launch"}, timeout=5,
    )  # fmt: skip
    assert resp.status_code == 403
    assert "role 'owner' may not do this" in resp.json()["error"]


def test_raise_requires_a_reason_and_is_audited(
    control_server: str, make_tenant: Callable[..., str], make_token: Callable[..., str],
    sql: Sql,
) -> None:  # fmt: skip
    make_tenant("acme", "10")
    finance = make_token("finance")
    url = f"{control_server}/v1/caps/acme/raises"
    missing = requests.post(url, headers=auth(finance), json={"new_cap_usd": "20"}, timeout=5)
    assert missing.status_code == 400
    assert missing.json() == {
        "error": "invalid request: reason: is required",
        "fields": [{"field": "reason", "message": "is required"}],
    }
    blank = requests.post(
        url, headers=auth(finance), json={"new_cap_usd": "20", "reason": "  "}, timeout=5
    )
    assert blank.status_code == 400
    assert blank.json()["fields"] == [{"field": "reason", "message": "must not be empty"}]
    bad = {"new_cap_usd": "20", "reason": "a\x00b", "expires_at": "2030-01-01T00:00:00"}
    refused = requests.post(url, headers=auth(finance), json=bad, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["fields"] == [
        {"field": "reason", "message": "must not contain NUL characters"},
        {"field": "expires_at", "message": "must be a time with a UTC offset"},
    ]
    ok = requests.post(
        url, headers=auth(finance), json={"new_cap_usd": "20", "reason": "Q3 launch"}, timeout=5
    )
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert (body["old_value_usd"], body["new_value_usd"], body["author"], body["expires_at"]) == (
        "10.000000000", "20.000000000", "test-finance", None)  # fmt: skip
    assert sql("SELECT daily_cap_usd FROM tenants WHERE tenant_id = 'acme'") == [(D("20"),)]
    audit = sql("SELECT actor, actor_role, action, tenant_id, details FROM audit_log")
    assert len(audit) == 1
    actor, role, action, tenant, details = audit[0]
    assert (actor, role, action, tenant) == ("test-finance", "finance", "cap_change", "acme")
    assert details["reason"] == "Q3 launch"
    assert (details["old_value_usd"], details["new_value_usd"]) == ("10.000000000", "20.000000000")
    unknown = requests.post(
        f"{control_server}/v1/caps/ghost/raises", headers=auth(finance),
        json={"new_cap_usd": "20", "reason": "x"}, timeout=5,
    )  # fmt: skip
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown tenant 'ghost'"


def test_one_click_temporary_raise_lasts_72_hours_and_reverts_by_itself(
    clocked_client: Any, clock: Clock, make_tenant: Callable[..., str],
    make_token: Callable[..., str], sql: Sql,
) -> None:  # fmt: skip
    make_tenant("acme", "10")
    admin = make_token("admin")
    agent = make_token("agent", "acme")
    resp = clocked_client.post(
        "/v1/caps/acme/raises/temporary", headers=auth(admin), json={"reason": "big launch"}
    )
    assert resp.status_code == 201, resp.get_json()
    change = resp.get_json()
    assert (change["old_value_usd"], change["new_value_usd"]) == ("10.000000000", "15.000000000")
    status = clocked_client.get("/v1/caps/acme", headers=auth(agent)).get_json()
    assert (status["cap_usd"], status["base_cap_usd"]) == ("15.000000000", "10.000000000")
    assert len(status["active_raises"]) == 1
    # Spend under the raised cap: $12 is more than the base cap.
    lease = clocked_client.post(
        "/v1/caps/leases", headers=auth(agent),
        json={"tenant_id": "acme", "holder": "r", "min_usd": "12"},
    ).get_json()  # fmt: skip
    assert lease["status"] == "granted"
    clocked_client.post(f"/v1/caps/leases/{lease['lease_id']}/close", headers=auth(agent),
                        json={"spent_usd": "12"})  # fmt: skip
    clock.advance(hours=71, minutes=59)
    assert clocked_client.get("/v1/caps/acme", headers=auth(agent)).get_json()["cap_usd"] == (
        "15.000000000"
    )
    clock.advance(minutes=2)  # 72 hours and a minute later: back to $10, by itself
    status = clocked_client.get("/v1/caps/acme", headers=auth(agent)).get_json()
    assert status["cap_usd"] == "10.000000000" and status["active_raises"] == []
    assert sql("SELECT reverted_at IS NOT NULL FROM cap_raises") == [(True,)]
    actions = [r[0] for r in sql("SELECT action FROM audit_log ORDER BY audit_id")]
    assert actions == ["cap_raise_temporary", "cap_raise_expired"]
    blocked = clocked_client.post(
        "/v1/caps/leases", headers=auth(agent),
        json={"tenant_id": "acme", "holder": "r", "min_usd": "0.01"},
    )  # fmt: skip
    # 72 hours on, it is another UTC day: fresh spend, under the base cap again.
    assert (blocked.get_json()["status"], blocked.get_json()["cap_usd"]) == (
        "granted",
        "10.000000000",
    )


def test_temporary_raise_must_go_up_and_expiry_must_be_future(
    clocked_client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme", "10")
    admin = make_token("admin")
    resp = clocked_client.post(
        "/v1/caps/acme/raises/temporary", headers=auth(admin),
        json={"reason": "x", "new_cap_usd": "5"},
    )  # fmt: skip
    assert resp.status_code == 400
    assert "a temporary raise must be above the cap in force ($10.00)" in resp.get_json()["error"]
    resp = clocked_client.post(
        "/v1/caps/acme/raises", headers=auth(admin),
        json={"reason": "x", "new_cap_usd": "50", "expires_at": "2001-01-01T00:00:00+00:00"},
    )  # fmt: skip
    assert (
        resp.status_code == 400 and resp.get_json()["error"] == "the expiry must be in the future"
    )


def test_bad_lease_requests_are_named(
    control_server: str, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme", "10")
    token = make_token("agent", "acme")
    url = f"{control_server}/v1/caps/leases"
    cases = [
        ({"tenant_id": "acme", "holder": "r"}, "min_usd", "is required"),
        ({"tenant_id": "acme", "holder": "r", "min_usd": "-1"}, "min_usd", "must be >= 0"),
        ({"tenant_id": "acme", "holder": "r", "min_usd": "0.0000000001"}, "min_usd",
         "must have at most 9 decimal places"),
        ({"tenant_id": "acme", "holder": "r", "min_usd": "lots"}, "min_usd", "must be a number"),
        ({"tenant_id": "acme", "min_usd": "1"}, "holder", "is required"),
        ({"tenant_id": "acme", "holder": "r" * 201, "min_usd": "1"}, "holder",
         "must be at most 200 characters"),
        ({"tenant_id": "acme", "holder": "r", "min_usd": "1", "ttl_s": 0}, "ttl_s",
         "must be >= 1.0"),
        ({"tenant_id": "acme", "holder": "r", "min_usd": "1", "ttl_s": 21601}, "ttl_s",
         "must be <= 21600.0"),
        ({"tenant_id": "acme", "holder": "r", "min_usd": "1", "colour": "red"}, "colour",
         "is not a known field"),
    ]  # fmt: skip
    for body, field, message in cases:
        resp = requests.post(url, headers=auth(token), json=body, timeout=5)
        assert resp.status_code == 400
        assert resp.json() == {
            "error": f"invalid request: {field}: {message}",
            "fields": [{"field": field, "message": message}],
        }, body
    lease = requests.post(
        url,
        headers=auth(token),
        timeout=5,
        json={"tenant_id": "acme", "holder": "r", "min_usd": "1"},
    ).json()
    sync = f"{url}/{lease['lease_id']}/sync"
    requests.post(sync, headers=auth(token), json={"spent_usd": "0.5"}, timeout=5)
    back = requests.post(sync, headers=auth(token), json={"spent_usd": "0.2"}, timeout=5)
    assert back.status_code == 400
    assert back.json()["error"] == "spent_usd is the lease's cumulative spend and cannot go down"
    assert back.json()["fields"] == [
        {"field": "spent_usd", "message": "is the lease's cumulative spend and cannot go down"}
    ]
    assert back.json()["status"] == "invalid"


def test_cli_raise_and_expire(
    db_url: str, make_tenant: Callable[..., str], sql: Sql, monkeypatch: Any
) -> None:
    from click.testing import CliRunner

    from runledger.cli import main

    make_tenant("acme", "10")
    monkeypatch.setenv("RUNLEDGER_DATABASE_URL", db_url)
    runner = CliRunner()
    no_reason = runner.invoke(main, ["cost", "raise", "acme", "--cap-usd", "20", "--author", "ops"])
    assert no_reason.exit_code == 2 and "Missing option '--reason'" in no_reason.output
    result = runner.invoke(
        main,
        ["cost", "raise", "acme", "--cap-usd", "25", "--reason", "launch", "--author", "ops",
         "--hours", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tenant acme: daily cap $10.00 -> $25.00 until" in result.output
    status = runner.invoke(main, ["cost", "status", "acme"])
    assert '"cap_usd": "25.000000000"' in status.output
    sql("UPDATE cap_raises SET created_at = now() - interval '2 hours',"
        " expires_at = now() - interval '1 hour'")  # fmt: skip
    expired = runner.invoke(main, ["cost", "expire-raises"])
    assert "tenant acme: raise 1 expired; cap back to $10.00" in expired.output
    assert [r[0] for r in sql("SELECT action FROM audit_log ORDER BY audit_id")] == [
        "cap_raise_temporary",
        "cap_raise_expired",
    ]
    lower = runner.invoke(
        main, ["cost", "raise", "acme", "--cap-usd", "10", "--reason", "x", "--author", "ops"]
    )
    assert lower.exit_code == 2 and "the cap is already $10.00" in lower.output


def test_reclaim_takes_no_fields(
    clocked_client: Any, clock: Clock, make_tenant: Callable[..., str],
    make_token: Callable[..., str], sql: Sql,
) -> None:  # fmt: skip
    make_tenant("acme", "10")
    admin, agent = make_token("admin"), make_token("agent", "acme")
    lease = clocked_client.post(
        "/v1/caps/leases", headers=auth(agent),
        json={"tenant_id": "acme", "holder": "r", "min_usd": "1", "ttl_s": 30},
    ).get_json()  # fmt: skip
    assert lease["status"] == "granted"
    clock.advance(seconds=31)
    wrong = clocked_client.post("/v1/caps/reclaim", headers=auth(admin), json={"tenant": "acme"})
    assert (wrong.status_code, wrong.get_json()) == (400, {
        "error": "invalid request: tenant: is not a known field",
        "fields": [{"field": "tenant", "message": "is not a known field"}],
    })  # fmt: skip
    assert sql("SELECT status FROM cap_leases") == [("open",)]
    listed = clocked_client.post("/v1/caps/reclaim", headers=auth(admin), json=[])
    assert (listed.status_code, listed.get_json()) == (400, {"error": "body must be a JSON object"})
    done = clocked_client.post("/v1/caps/reclaim", headers=auth(admin))
    assert (done.status_code, done.get_json()) == (200, {"reclaimed": 1})
    assert sql("SELECT status FROM cap_leases") == [("expired",)]
