"""An event_id is stored at most once: whatever its time, its spelling or the validation path.

A batch whose every event is valid takes the fast path (the request body goes to PostgreSQL
as sent); a batch with an invalid event takes the slow path (the validated models are sent).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from _support import event
from runledger.events import validate_batch
from runledger.money import MAX_USD
from runledger.store import Database, IngestLimits, Ingestor
from runledger.store.retention import run_retention

SQL = Callable[..., list[tuple[Any, ...]]]
INVALID = {"type": "no_such_type"}
"""Sent alongside an event, sends the batch down the slow path."""


@pytest.fixture
def agent(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme", "99999999999")
    return {"Authorization": f"Bearer {make_token('agent', 'acme')}"}


def post(client: Any, headers: dict[str, str], *events: dict[str, Any]) -> list[dict[str, Any]]:
    resp = client.post("/v1/events", json={"events": list(events)}, headers=headers)
    assert resp.status_code == 200, resp.json
    return [r for r in resp.json["results"] if r["index"] < len(events) and r.get("event_id")]


def nanoseconds(minutes_ago: int = 5) -> str:
    """Go's RFC 3339 with nanoseconds; the 7th digit would round the microsecond up."""
    at = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=minutes_ago)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z"


@pytest.mark.parametrize("first_path", ["fast", "slow"])
def test_nanosecond_times_are_stored_once_through_both_paths(
    client: Any, agent: dict[str, str], sql: SQL, first_path: str
) -> None:
    ev = event("run_started", occurred_at=nanoseconds(), cost_usd="1.25")
    fast, slow = [ev], [ev, INVALID]
    first, second = (fast, slow) if first_path == "fast" else (slow, fast)

    assert post(client, agent, *first)[0]["status"] == "accepted"
    assert post(client, agent, *second)[0]["status"] == "duplicate"

    rows = sql("SELECT occurred_at FROM events")
    assert len(rows) == 1
    assert rows[0][0].microsecond == 123456, "truncated to the microsecond, never rounded"
    assert sql("SELECT cost_usd FROM runs") == [(Decimal("1.25"),)]
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("1.25"),)]


def test_nanosecond_times_in_a_payload_are_truncated_too(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    due = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S") + ".999999999Z"
    ev = event("proof_requested", payload={"proof_id": "pf-1", "due_at": due})
    assert post(client, agent, ev)[0]["status"] == "accepted"
    assert sql("SELECT extract(microseconds FROM due_at)::int % 1000000 FROM proofs") == [(999999,)]


@pytest.mark.parametrize("second_path", ["fast", "slow"])
def test_same_id_with_another_time_in_a_later_batch_is_a_duplicate(
    client: Any, agent: dict[str, str], sql: SQL, second_path: str
) -> None:
    first = event("artifact_written", artifact_path="a.md", artifact_version=1, cost_usd="2",
                  occurred_at=(datetime.now(UTC) - timedelta(days=2)).isoformat())  # fmt: skip
    again = {**first, "occurred_at": datetime.now(UTC).isoformat(), "cost_usd": "3"}
    assert post(client, agent, first)[0]["status"] == "accepted"

    batch = [again] if second_path == "fast" else [again, INVALID]
    result = post(client, agent, *batch)[0]

    assert (result["status"], result["event_id"]) == ("duplicate", first["event_id"])
    assert sql("SELECT count(*), sum(cost_usd) FROM events") == [(1, Decimal("2"))]
    assert sql("SELECT cost_usd FROM runs") == [(Decimal("2"),)]
    assert sql("SELECT sum(spent_usd) FROM caps") == [(Decimal("2"),)]


def test_retention_forgets_the_ids_of_dropped_days_only(
    db: Database, make_tenant: Callable[..., str], db_url: str, sql: SQL
) -> None:
    make_tenant("acme")
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=3)
    events = validate_batch([
        event("run_started", run_id="old", occurred_at=old.isoformat()),
        event("run_started", run_id="recent", occurred_at=recent.isoformat()),
    ])  # fmt: skip
    # An ingestor with a longer window stands in for events stored before the window moved.
    statuses = Ingestor(db, IngestLimits(retention_days=60)).ingest(events)
    assert [r.status for r in statuses] == ["accepted", "accepted"]

    dry = run_retention(db_url, days=30, now=now, dry_run=True)
    assert f"events_p{old:%Y%m%d}" in dry.dropped_partitions
    assert sql("SELECT count(*) FROM event_ids") == [(2,)]

    run_retention(db_url, days=30, now=now)
    assert sql("SELECT event_id FROM event_ids") == [(events[1].event_id,)]
    assert sql("SELECT event_id FROM events") == [(events[1].event_id,)]
    # The kept event is still refused however it is re-sent.
    again = validate_batch([{**events[1].model_dump(mode="json"), "occurred_at": now.isoformat()}])
    assert [r.status for r in Ingestor(db).ingest(again)] == ["duplicate"]


# -- sums past what the ledger holds ----------------------------------------------------------


def _costly(run: str, minutes_ago: float = 5, **fields: Any) -> dict[str, Any]:
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    return event("external_call", run_id=run, occurred_at=at, cost_usd="99999999999",
                 payload={"service": "bulk", "summary": "a large charge"}, **fields)  # fmt: skip


def _answer(client: Any, headers: dict[str, str], events: list[dict[str, Any]]) -> Any:
    resp = client.post("/v1/events", json={"events": events}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def _past_max(what: str) -> list[dict[str, str]]:
    """The errors of the second event of a batch, refused for taking ``what`` past the max."""
    message = f"would take {what} past ${MAX_USD:,}, the largest amount the ledger holds"
    return [{"field": "events[1].cost_usd", "message": message}]


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_a_run_total_past_the_ledger_maximum_rejects_only_the_event_that_crosses_it(
    client: Any, agent: dict[str, str], sql: SQL, path: str
) -> None:
    events = [_costly("run-big"), _costly("run-big"), {**_costly("run-other"), "cost_usd": "0.5"}]
    body = _answer(client, agent, events if path == "fast" else [*events, INVALID])

    assert [r["status"] for r in body["results"][:3]] == ["accepted", "rejected", "accepted"]
    assert body["results"][1]["errors"] == _past_max("run 'run-big''s total cost")
    assert sql("SELECT run_id, cost_usd FROM runs ORDER BY 1") == [
        ("run-big", Decimal("99999999999")), ("run-other", Decimal("0.5"))
    ]  # fmt: skip
    assert sql("SELECT count(*), sum(cost_usd) FROM events") == [(2, Decimal("99999999999.5"))]
    # The next batch finds the run full as well.
    later = _answer(client, agent, [_costly("run-big", minutes_ago=1)])
    assert later["results"][0]["errors"][0]["field"] == "events[0].cost_usd"
    assert sql("SELECT count(*) FROM events") == [(2,)]


def test_a_tenant_day_past_the_ledger_maximum_is_rejected_naming_the_day(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    first = _costly("run-1")
    day = datetime.fromisoformat(first["occurred_at"]).astimezone(UTC).date()
    body = _answer(client, agent, [first, _costly("run-2")])
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["errors"] == _past_max(f"tenant 'acme''s spend on {day}")
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("99999999999"),)]
    assert sql("SELECT run_id FROM runs") == [("run-1",)], "the rejected event made no run"


def test_a_lease_spend_past_the_ledger_maximum_is_rejected(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    opened = client.post("/v1/caps/leases", headers=agent,
                         json={"tenant_id": "acme", "holder": "run-1", "min_usd": "1"})  # fmt: skip
    assert opened.status_code == 201, opened.json
    tag = {"payload": {"service": "bulk", "summary": "a large charge",
                       "lease_id": opened.json["lease_id"]}}  # fmt: skip
    # Two days and two runs: only the lease's sum crosses the limit.
    events = [{**_costly("run-1", minutes_ago=60 * 24), **tag}, {**_costly("run-2"), **tag}]
    body = _answer(client, agent, events)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["errors"] == _past_max("the spend of its lease (payload.lease_id)")
    assert sql("SELECT ledger_spent_usd FROM cap_leases") == [(Decimal("99999999999"),)]
