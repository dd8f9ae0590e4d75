"""POST /v1/events: every type with its effects, duplicates, rejections, auth, outages."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
import requests

from _support import event
from runledger.events import EVENT_TYPES

SQL = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def agent(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme", "10")
    make_tenant("globex", "10")
    return {"Authorization": f"Bearer {make_token('agent', 'acme')}"}


@pytest.fixture
def admin(make_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('admin')}"}


def post(client: Any, headers: dict[str, str], events: list[dict[str, Any]]) -> Any:
    return client.post("/v1/events", json={"events": events}, headers=headers)


def ts(minutes_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def one_of_each() -> list[dict[str, Any]]:
    """A valid event of every type, for one run of project proj-1."""
    due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    art = {"artifact_path": "site/index.html", "artifact_version": 3}
    return [
        event("run_queued", occurred_at=ts(10)),
        event("run_started", occurred_at=ts(9), model="gpt-4o", attempt=2),
        event("phase_entered", occurred_at=ts(9)),
        event("artifact_written", occurred_at=ts(8), tokens_in=1000, tokens_out=500,
              cost_usd="0.0125", model="gpt-4o", **art),
        event("validation_failed", occurred_at=ts(7), payload={"reason": "missing CTA"}, **art),
        event("user_override", occurred_at=ts(6), payload={"action": "approve anyway"}),
        event("impersonation_started", occurred_at=ts(6), payload={"actor": "support-7"}),
        event("impersonation_ended", occurred_at=ts(6), payload={"actor": "support-7"}),
        event("external_call", occurred_at=ts(5), cost_usd="0.002",
              payload={"service": "maps-api", "summary": "geocode 1 address"}),
        event("cap_hit", occurred_at=ts(5),
              payload={"cap": "tokens", "limit": 20000, "spent": 20100}),
        event("proof_requested", occurred_at=ts(5), payload={"proof_id": "pf-1", "due_at": due}),
        event("proof_completed", occurred_at=ts(4), payload={"proof_id": "pf-1"}),
        event("microsite_visit", occurred_at=ts(4), payload={"microsite_id": "ms-1"}),
        event("microsite_conversion", occurred_at=ts(4), payload={"microsite_id": "ms-1"}),
        event("demo_started", occurred_at=ts(4), payload={"demo_id": "d-1", "city": "Lisbon"}),
        event("demo_completed", occurred_at=ts(3), payload={"demo_id": "d-1", "city": "Lisbon"}),
        event("publish_done", occurred_at=ts(3), role="publisher", **art),
        event("phase_advanced", occurred_at=ts(2), payload={"to_phase": "review"}),
        event("run_finished", occurred_at=ts(1), tokens_in=10, tokens_out=5, cost_usd="0.0005"),
    ]  # fmt: skip


def test_every_event_type_is_accepted_with_its_effects(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    batch = one_of_each()
    failed = event("run_failed", run_id="run-2", occurred_at=ts(1),
                   payload={"reason": "model timeout"}, cost_usd="0.001")  # fmt: skip
    batch.append(failed)
    batch.append(event("model_call", run_id="run-3", occurred_at=ts(1), model="gpt-4.1",
                       payload={"operation": "chat", "cached_tokens_in": 2}))  # fmt: skip
    assert {e["type"] for e in batch} == set(EVENT_TYPES)

    resp = post(client, agent, batch)

    assert resp.status_code == 200, resp.json
    body = resp.json
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (len(batch), 0, 0)
    assert [r["index"] for r in body["results"]] == list(range(len(batch)))
    assert {r["event_id"] for r in body["results"]} == {e["event_id"] for e in batch}
    assert sql("SELECT count(*) FROM events") == [(len(batch),)]
    seqs = [r[0] for r in sql("SELECT seq FROM events ORDER BY seq")]
    assert seqs == sorted(set(seqs))

    run = sql(
        "SELECT status, tokens_in, tokens_out, cost_usd, model, attempt, queued_at IS NOT NULL,"
        " started_at IS NOT NULL, finished_at IS NOT NULL, artifact_path, artifact_version"
        " FROM runs WHERE run_id = 'run-1'"
    )
    assert run == [
        ("succeeded", 1010, 505, Decimal("0.015"), "gpt-4o", 2, True, True, True,
         "site/index.html", 3)
    ]  # fmt: skip
    assert sql("SELECT status, error FROM runs WHERE run_id = 'run-2'") == [
        ("failed", "model timeout")
    ]
    failures = sql("SELECT run_id, kind, reason, count, artifact_ref FROM failures ORDER BY 1")
    assert failures == [
        ("run-1", "validation_failed", "missing CTA", 1, "site/index.html@3"),
        ("run-2", "run_failed", "model timeout", 1, None),
    ]
    assert sql("SELECT tenant_id, spent_usd, daily_cap_usd, blocked FROM caps") == [
        ("acme", Decimal("0.016"), Decimal("10"), False)
    ]
    assert sql("SELECT current_phase, last_advanced_at IS NOT NULL FROM projects") == [
        ("review", True)
    ]
    assert sql("SELECT proof_id, completed_at IS NOT NULL, approved FROM proofs") == [
        ("pf-1", True, True)
    ]


def test_same_batch_sent_twice_is_stored_once(client: Any, agent: dict[str, str], sql: SQL) -> None:
    batch = one_of_each()
    first = post(client, agent, batch).json
    second = post(client, agent, batch).json
    assert first["accepted"] == len(batch)
    assert (second["accepted"], second["duplicates"]) == (0, len(batch))
    assert {r["status"] for r in second["results"]} == {"duplicate"}
    assert sql("SELECT count(*) FROM events") == [(len(batch),)]
    assert sql("SELECT tokens_in, cost_usd FROM runs") == [(1010, Decimal("0.015"))]
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("0.015"),)]


def test_duplicate_inside_one_batch_is_reported_and_counted_once(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    ev = event("artifact_written", artifact_path="a.md", artifact_version=1, cost_usd="1.5")
    body = post(client, agent, [ev, dict(ev)]).json
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate"]
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("1.5"),)]


def test_concurrent_clients_sending_the_same_events_count_once(
    control_server: str, make_tenant: Callable[..., str], make_token: Callable[..., str], sql: SQL
) -> None:
    make_tenant("acme", "1000")
    headers = {"Authorization": f"Bearer {make_token('agent', 'acme')}"}
    batches = [
        [event("artifact_written", run_id=f"run-{b}", artifact_path="x.md", artifact_version=1,
               tokens_in=10, cost_usd="0.01") for _ in range(50)]
        for b in range(8)
    ]  # fmt: skip
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()

    def send() -> None:
        with requests.Session() as s:
            for batch in batches:
                r = s.post(f"{control_server}/v1/events", json={"events": batch},
                           headers=headers, timeout=30)  # fmt: skip
                assert r.status_code == 200, r.text
                with lock:
                    outcomes.append(r.json())

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 16
    assert sum(o["accepted"] for o in outcomes) == 400
    assert sum(o["duplicates"] for o in outcomes) == 400
    assert sql("SELECT count(*), sum(cost_usd) FROM events") == [(400, Decimal("4.00"))]
    assert sql("SELECT sum(tokens_in), sum(cost_usd) FROM runs") == [(4000, Decimal("4.00"))]
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("4.00"),)]


def test_spend_reaching_the_daily_cap_marks_the_day_blocked(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    art = {"artifact_path": "a.md", "artifact_version": 1}
    post(client, agent, [event("artifact_written", cost_usd="6", **art)])
    assert sql("SELECT spent_usd, blocked FROM caps") == [(Decimal("6"), False)]
    post(client, agent, [event("artifact_written", cost_usd="4", **art)])
    assert sql("SELECT spent_usd, blocked FROM caps") == [(Decimal("10"), True)]
    assert sql("SELECT at_80, at_100 FROM cap_usage") == [(True, True)]


def test_values_are_stored_as_validated_whatever_their_json_spelling(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    # A valid batch is handed to PostgreSQL as sent; spellings validation normalises must
    # come out the same: names lower-cased, 5.0 tokens as 5, "yes" as true, a string cost.
    art = {"artifact_path": "a.md", "artifact_version": 1}
    batch = [
        event("artifact_written", phase="Build", role="Implementer", playbook="Local-Business",
              tokens_in=5.0, tokens_out="7", cached="yes", cost_usd="0.50", **art),
        event("phase_advanced", phase="Build", payload={"to_phase": "Review"}),
    ]  # fmt: skip
    body = post(client, agent, batch).json
    assert body["accepted"] == 2, body
    assert sql(
        "SELECT phase, role, playbook, tokens_in, tokens_out, cached, cost_usd FROM runs"
    ) == [("build", "implementer", "local-business", 5, 7, True, Decimal("0.50"))]
    assert sql("SELECT DISTINCT phase FROM events") == [("build",)]
    assert sql("SELECT current_phase FROM projects") == [("review",)]


def test_a_body_naming_events_twice_stores_what_was_validated(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    # Validation reads the last "events" member, as PostgreSQL would; the array the ingest
    # hands PostgreSQL is cut from the body, and such a body never yields one.
    first, last = event("run_started", run_id="run-first"), event("run_started", run_id="run-last")
    body = b'{"events": %s, "events": %s}' % (orjson.dumps([first]), orjson.dumps([last]))
    resp = client.post("/v1/events", data=body, headers=agent, content_type="application/json")
    assert resp.json["accepted"] == 1, resp.json
    assert sql("SELECT run_id FROM events") == [("run-last",)]
    assert sql("SELECT run_id FROM runs") == [("run-last",)]


def test_out_of_order_events_settle_on_the_latest_status(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    post(client, agent, [event("run_finished", occurred_at=ts(1))])
    post(client, agent, [event("run_started", occurred_at=ts(5))])
    post(client, agent, [event("run_queued", occurred_at=ts(6))])
    assert sql("SELECT status, queued_at < started_at FROM runs") == [("succeeded", True)]
    post(client, agent, [event("run_finished", occurred_at=ts(0), payload={"status": "partial"})])
    assert sql("SELECT status FROM runs") == [("partial",)]


def test_repeated_failure_is_one_row_with_a_count(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    for minutes in (5, 3, 1):
        post(client, agent, [event("validation_failed", occurred_at=ts(minutes),
                                   payload={"reason": "bad heading"})])  # fmt: skip
    rows = sql("SELECT count, first_seen < last_seen FROM failures")
    assert rows == [(3, True)]


# -- rejections --------------------------------------------------------------------------

MALFORMED: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing field", {"tenant_id": None}, "tenant_id", "is required"),
    ("bad uuid", {"event_id": "not-a-uuid"}, "event_id", "UUID"),
    ("unknown type", {"type": "run_exploded"}, "type", "unknown event type"),
    ("missing type", {"type": None}, "type", "is required"),
    ("negative cost", {"cost_usd": -0.01}, "cost_usd", "must be >= 0"),
    ("negative tokens", {"tokens_in": -5}, "tokens_in", "must be >= 0"),
    ("cost precision", {"cost_usd": "0.0000000001"}, "cost_usd",
     "must have at most 9 decimal places"),
    ("cost too large", {"cost_usd": "100000000000"}, "cost_usd",
     "has too many digits before the decimal point"),
    ("naive time", {"occurred_at": "2026-01-01T00:00:00"}, "occurred_at",
     "must be a time with a UTC offset"),
    ("future time", {"occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at", "in the future"),
    ("too old", {"occurred_at": "2001-01-01T00:00:00Z"}, "occurred_at", "retention window"),
    ("unknown field", {"colour": "red"}, "colour", "is not a known field"),
    ("bad phase", {"phase": "build phase!"}, "phase", "pattern"),
    ("bad tenant id", {"tenant_id": "acme corp"}, "tenant_id", "pattern"),
    ("unknown tenant", {"tenant_id": "initech"}, "tenant_id", "unknown tenant"),
    ("pii key", {"payload": {"customer": {"email": "x"}}}, "payload",
     "payload.customer.email is personal data"),
    ("pii value", {"payload": {"note": "mail bob@example.com"}}, "payload", "email address"),
    ("coordinates", {"payload": {"lat": 38.72, "lon": -9.14}}, "payload", "personal data"),
    ("payload too big", {"payload": {"blob": "x" * 20000}}, "payload", "the limit is 16384"),
    ("payload not object", {"payload": [1, 2]}, "payload", "must be a mapping"),
    ("run_failed without reason", {"type": "run_failed"}, "payload.reason", "required"),
    ("artifact without version", {"type": "artifact_written", "artifact_path": "a.md"},
     "artifact_version", "required"),
    ("cap_hit bad cap", {"type": "cap_hit", "payload": {"cap": "moon", "limit": 1, "spent": 2}},
     "payload.cap", "Input should be"),
    ("multi-line summary", {"type": "external_call",
     "payload": {"service": "s", "summary": "a\nb"}}, "payload.summary", "pattern"),
    ("all-zero trace id", {"trace_id": "0" * 32}, "trace_id",
     "is all zeros, which is not a valid W3C id; send the real id or leave the field out"),
    ("all-zero span id", {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "0" * 16},
     "span_id",
     "is all zeros, which is not a valid W3C id; send the real id or leave the field out"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "change", "field", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_event_is_rejected_naming_the_field_and_nothing_is_stored(
    client: Any,
    agent: dict[str, str],
    admin: dict[str, str],
    sql: SQL,
    why: str,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    good = event("phase_entered", run_id="good-run", cost_usd="0.5")
    bad = event("phase_entered", run_id="bad-run", cost_usd="0.25")
    for key, value in change.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
    # An agent token may not even name another tenant (403 for the batch, tested below), so
    # the cases about tenant ids are sent with an admin token.
    headers = agent if bad.get("tenant_id") in (None, "acme") else admin
    resp = post(client, headers, [good, bad])
    assert resp.status_code == 200
    body = resp.json
    assert (body["accepted"], body["rejected"]) == (1, 1)
    result = body["results"][1]
    assert result["status"] == "rejected"
    fields = [e["field"] for e in result["errors"]]
    assert f"events[1].{field}" in fields, result
    assert any(message in e["message"] for e in result["errors"]), result
    assert sql("SELECT DISTINCT run_id FROM events") == [("good-run",)]
    assert sql("SELECT run_id FROM runs") == [("good-run",)]
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("0.5"),)]
