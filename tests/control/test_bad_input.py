"""Input the ledger cannot store is a 4xx naming the field, never a 500 (each case once was)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from _support import event
from runledger.control._errors import INTERNAL_ERROR
from runledger.events import validate_batch
from runledger.store import CapAdmin

SQL = Callable[..., list[tuple[Any, ...]]]
NUL = "must not contain NUL characters"


@pytest.fixture
def admin(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme", "100")
    return {"Authorization": f"Bearer {make_token('admin')}"}


def refused(resp: Any, status: int = 400) -> list[tuple[str, str]]:
    """Assert ``resp`` is the JSON error shape with ``status``; return its (field, message)s."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"]
    return [(f["field"], f["message"]) for f in body.get("fields", [])]


def rejected(resp: Any) -> list[tuple[str, str]]:
    """Assert a batch answer rejected its only item; return the item's (field, message)s."""
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (result,) = resp.get_json()["results"]
    assert result["status"] == "rejected", result
    return [(e["field"], e["message"]) for e in result["errors"]]


def lease(**fields: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "holder": "run-1", "min_usd": "1", **fields}


def record(**fields: Any) -> dict[str, Any]:
    return {"audit_id": "a-1", "tenant_id": "acme", "run_id": "run-1", "prompt": "hello",
            "created_at": datetime.now(UTC).isoformat(), **fields}  # fmt: skip


def test_nul_characters_are_refused_naming_the_field(client: Any, admin: dict[str, str]) -> None:
    post = client.post
    assert refused(post("/v1/caps/leases", json=lease(holder="run\x001"), headers=admin)) == [
        ("holder", NUL)
    ]
    assert refused(post("/v1/caps/leases", json=lease(role="imp\x00"), headers=admin)) == [
        ("role", NUL)
    ]
    assert (
        refused(post("/v1/caps/leases", json=lease(tenant_id="ac\x00me"), headers=admin))[0][0]
        == "tenant_id"
    )
    reason = {"new_cap_usd": "200", "reason": "launch\x00week"}
    assert refused(post("/v1/caps/acme/raises", json=reason, headers=admin)) == [("reason", NUL)]
    ev = event("run_started", tenant_id="ac\x00me")
    resp = post("/v1/events", json={"events": [ev]}, headers=admin)
    assert rejected(resp)[0][0] == "events[0].tenant_id"
    for name in ("prompt", "response"):
        resp = post("/v1/prompt-audit", json={"records": [record(**{name: "a\x00b"})]},
                    headers=admin)  # fmt: skip
        assert rejected(resp) == [(f"records[0].{name}", NUL)]
    resp = post("/v1/prompt-audit", json={"records": [record(tenant_id="a\x00")]}, headers=admin)
    assert rejected(resp)[0][0] == "records[0].tenant_id"


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/v1/caps/a%00b", "tenant_id"),
        ("GET", "/v1/caps/a%00b/raises", "tenant_id"),
        ("POST", "/v1/caps/a%00b/raises", "tenant_id"),
        ("POST", "/v1/caps/a%00b/raises/temporary", "tenant_id"),
        ("POST", "/v1/caps/a%00b/raises/1/revert", "tenant_id"),
        ("POST", "/v1/caps/leases/a%00b/sync", "lease_id"),
        ("POST", "/v1/caps/leases/a%00b/close", "lease_id"),
    ],
)
def test_nul_characters_in_the_url_are_refused_naming_the_segment(
    client: Any, admin: dict[str, str], method: str, path: str, name: str
) -> None:
    body = {"spent_usd": "1", "new_cap_usd": "2", "reason": "r"}
    resp = client.open(path, method=method, json=body, headers=admin)
    assert refused(resp) == [(name, NUL)]
    assert resp.get_json()["error"] == f"{name} in the URL {NUL}"


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        ("1e30", "must have at most 20 digits"),
        (1e30, "must have at most 20 digits"),
        ("1e11", "has too many digits before the decimal point"),
        ("1e12", "has too many digits before the decimal point"),
    ],
)
def test_dollar_amounts_the_ledger_cannot_hold_are_refused(
    client: Any, admin: dict[str, str], amount: Any, problem: str
) -> None:
    post = client.post
    assert refused(post("/v1/caps/leases", json=lease(min_usd=amount), headers=admin)) == [
        ("min_usd", problem)
    ]
    body = {"new_cap_usd": amount, "reason": "r"}
    assert refused(post("/v1/caps/acme/raises", json=body, headers=admin)) == [
        ("new_cap_usd", problem)
    ]
    resp = post("/v1/events", json={"events": [event("run_started", cost_usd=amount)]},
                headers=admin)  # fmt: skip
    assert rejected(resp) == [("events[0].cost_usd", problem)]


OFFSET = "must have a UTC offset between -15:59 and +15:59"


@pytest.mark.parametrize("offset", ["+16:00", "-16:00", "+23:59"])
def test_utc_offsets_postgresql_refuses_are_refused(
    client: Any, admin: dict[str, str], offset: str
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + offset
    ev = event("run_started", occurred_at=soon)
    resp = client.post("/v1/events", json={"events": [ev]}, headers=admin)
    assert rejected(resp) == [("events[0].occurred_at", OFFSET)]
    body = {"new_cap_usd": "200", "reason": "r", "expires_at": soon}
    resp = client.post("/v1/caps/acme/raises", json=body, headers=admin)
    assert refused(resp) == [("expires_at", OFFSET)]
    resp = client.post("/v1/prompt-audit", json={"records": [record(created_at=soon)]},
                       headers=admin)  # fmt: skip
    assert rejected(resp) == [("records[0].created_at", OFFSET)]


def test_the_widest_offsets_postgresql_takes_are_stored_exactly(
    client: Any, admin: dict[str, str], sql: SQL
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=5)
    for offset in ("-15:59", "+15:59"):
        sign = 1 if offset[0] == "+" else -1
        local = at + sign * timedelta(hours=15, minutes=59)
        ev = event("run_started", occurred_at=local.strftime("%Y-%m-%dT%H:%M:%S.%f") + offset)
        resp = client.post("/v1/events", json={"events": [ev]}, headers=admin)
        assert resp.get_json()["accepted"] == 1
        assert sql("SELECT occurred_at FROM events WHERE event_id = %s",
                   uuid.UUID(ev["event_id"])) == [(at,)]  # fmt: skip


def test_a_time_past_year_9999_in_utc_is_refused(client: Any, admin: dict[str, str]) -> None:
    body = {"new_cap_usd": "200", "reason": "r", "expires_at": "9999-12-31T23:00:00-05:00"}
    resp = client.post("/v1/caps/acme/raises", json=body, headers=admin)
    assert refused(resp) == [("expires_at", "must be between the years 1 and 9999 in UTC")]


def test_unstorable_payloads_are_rejected_naming_the_payload(
    client: Any, admin: dict[str, str]
) -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = {"k": deep}
    ev = event("run_started", payload={"deep": deep})
    resp = client.post("/v1/events", json={"events": [ev]}, headers=admin)
    assert rejected(resp) == [
        ("events[0].payload", "payload is nested 301 levels deep; the limit is 32")
    ]
    # Over HTTP such numbers are read as floats and lone surrogates are not JSON; Python
    # callers of validate_batch can pass both.
    (big,) = validate_batch([event("run_started", payload={"n": 2**70})])
    assert isinstance(big, list)
    assert big[0].message == "payload holds an integer outside the 64-bit range"
    (errors,) = validate_batch([event("run_started", payload={"s": "\ud800"})])
    assert isinstance(errors, list)
    assert errors[0].message.startswith("payload cannot be stored as JSON: ")


def test_an_email_address_as_a_payload_key_is_rejected_naming_it(
    client: Any, admin: dict[str, str]
) -> None:
    # Found by tests/test_events.py's property test: the check looked for the address in
    # texts only, found none, and raised StopIteration (a 500).
    ev = event("artifact_written", artifact_path="a.html", artifact_version=1,
               payload={"jane.doe@example.com": 3})  # fmt: skip
    resp = client.post("/v1/events", json={"events": [ev]}, headers=admin)
    assert rejected(resp) == [
        ("events[0].payload", "payload.jane.doe@example.com contains an email address; "
         "events must not carry PII")
    ]  # fmt: skip


def test_an_artifact_version_beyond_a_postgresql_integer_is_refused(
    client: Any, admin: dict[str, str]
) -> None:
    ev = event("artifact_written", artifact_path="a.md", artifact_version=2**31)
    resp = client.post("/v1/events", json={"events": [ev]}, headers=admin)
    assert rejected(resp) == [("events[0].artifact_version", "must be <= 2147483647")]


def test_an_unexpected_error_is_answered_as_json_and_logged(
    client: Any, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def broken(self: Any, tenant_id: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(CapAdmin, "status", broken)
    with caplog.at_level(logging.ERROR):
        resp = client.get("/v1/caps/acme", headers=admin)
    assert resp.status_code == 500
    assert resp.mimetype == "application/json"
    assert resp.get_json() == {"error": INTERNAL_ERROR}
    assert "unexpected error answering GET /v1/caps/acme" in caplog.text
    assert "RuntimeError: a bug" in caplog.text


def test_lease_spend_past_the_ledger_maximum_is_refused_naming_spent_usd(
    client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str], sql: SQL
) -> None:
    make_tenant("huge", "99999999999")
    headers = {"Authorization": f"Bearer {make_token('admin')}"}
    most = "99999999999.999999999"
    ids = []
    for n in range(3):
        body = {"tenant_id": "huge", "holder": f"run-{n}", "min_usd": "0", "want_usd": "1"}
        resp = client.post("/v1/caps/leases", json=body, headers=headers)
        assert resp.status_code == 201, resp.get_data(as_text=True)
        ids.append(resp.get_json()["lease_id"])
    answers = [
        client.post(f"/v1/caps/leases/{i}/close", json={"spent_usd": most}, headers=headers)
        for i in ids
    ]
    assert answers[0].status_code == 200
    assert refused(answers[1]) == [
        ("spent_usd", "would take the tenant's spend for the day past the ledger's maximum")
    ]
    # Nothing of the refused closes was stored: those leases are still open.
    assert sql("SELECT count(*) FROM cap_leases WHERE status = 'open'") == [(2,)]
