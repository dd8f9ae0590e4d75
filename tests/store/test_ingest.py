"""Concurrent batches: the races ingest_batch detects are retried, never double counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from _support import event
from runledger.events import events_to_json, validate_batch
from runledger.store import Database, Ingestor
from runledger.store.partitions import PartitionCache

SQL = Callable[..., list[tuple[Any, ...]]]


def models(*raw: dict[str, Any]) -> list[Any]:
    out = validate_batch(list(raw))
    assert all(not isinstance(m, list) for m in out), out
    return out


def hold_open(db_url: str, batch: list[Any]) -> psycopg.Connection:
    """Run ingest_batch for ``batch`` in a transaction left open (locks held)."""
    conn = psycopg.connect(db_url)
    with conn.transaction():
        PartitionCache().ensure(conn, {datetime.now(UTC).date()})
    rows = conn.execute(
        "SELECT ord, outcome FROM ingest_batch(%s::json)", (events_to_json(batch).decode(),)
    ).fetchall()
    assert rows == []
    return conn


def ingest_in_thread(db: Database, batch: list[Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(Ingestor(db).ingest(batch)))
    thread.start()
    return thread, out


@pytest.fixture
def tenants(make_tenant: Callable[..., str]) -> None:
    make_tenant("acme")
    make_tenant("globex")


def test_same_events_in_two_concurrent_batches_count_once(
    db_url: str, db: Database, sql: SQL, tenants: None
) -> None:
    batch = models(
        event("artifact_written", artifact_path="a", artifact_version=1, cost_usd="1.25"),
        event("run_finished", cost_usd="0.75"),
    )
    first = hold_open(db_url, batch)
    thread, out = ingest_in_thread(db, batch)
    time.sleep(0.5)  # the second batch applies its effects, then waits for the ingest lock
    assert thread.is_alive()
    first.commit()
    first.close()
    thread.join(30)
    assert [r.status for r in out[0]] == ["duplicate", "duplicate"]
    assert sql("SELECT count(*) FROM events") == [(2,)]
    assert sql("SELECT cost_usd, status FROM runs") == [(Decimal("2.00"), "succeeded")]
    assert sql("SELECT spent_usd FROM caps") == [(Decimal("2.00"),)]


def test_project_created_by_another_tenant_meanwhile_is_rejected(
    db_url: str, db: Database, sql: SQL, tenants: None
) -> None:
    first = hold_open(db_url, models(event("phase_entered", project_id="shared", run_id="r-a")))
    theirs = models(
        event("phase_entered", tenant_id="globex", project_id="shared", run_id="r-g",
              cost_usd="3")
    )  # fmt: skip
    thread, out = ingest_in_thread(db, theirs)
    time.sleep(0.5)  # blocked on the first batch's new projects row
    assert thread.is_alive()
    first.commit()
    first.close()
    thread.join(30)
    result = out[0][0]
    assert result.status == "rejected"
    assert [(e.field, e.message) for e in result.errors] == [
        ("project_id", "project belongs to another tenant")
    ]
    assert sql("SELECT tenant_id FROM projects") == [("acme",)]
    assert sql("SELECT tenant_id, count(*) FROM events GROUP BY 1") == [("acme", 1)]
    assert sql("SELECT count(*) FROM caps WHERE tenant_id = 'globex'") == [(0,)]


# runs and failures have no foreign key to tenants (migration 0008: its share locks on hot
# tenant rows cost CPU under parallel batches); what the keys guaranteed, ingest and a
# trigger keep.


def test_deleting_a_tenant_deletes_its_runs_and_failures(
    db: Database, sql: SQL, tenants: None
) -> None:
    Ingestor(db).ingest(models(
        event("run_failed", payload={"reason": "timeout"}),
        event("validation_failed", run_id="run-2", payload={"reason": "no alt text"}),
        event("run_started", tenant_id="globex", project_id="pg", run_id="rg"),
    ))  # fmt: skip
    assert sql("SELECT count(*) FROM failures") == [(2,)]
    sql("DELETE FROM tenants WHERE tenant_id = 'acme'")
    assert sql("SELECT tenant_id FROM runs") == [("globex",)]
    assert sql("SELECT count(*) FROM failures") == [(0,)]


def test_a_batch_of_a_tenant_deleted_since_it_was_seen_is_rejected(
    db: Database, sql: SQL, tenants: None
) -> None:
    ingestor = Ingestor(db)
    assert [r.status for r in ingestor.ingest(models(event("run_started")))] == ["accepted"]
    sql("DELETE FROM tenants WHERE tenant_id = 'acme'")  # the Ingestor still believes in it
    (result,) = ingestor.ingest(models(event("run_started", run_id="run-2")))
    assert result.status == "rejected"
    assert [(e.field, e.message) for e in result.errors] == [("tenant_id", "unknown tenant 'acme'")]
    assert sql("SELECT count(*) FROM runs") == [(0,)]


def test_the_events_step_refuses_a_tenant_that_no_longer_exists(
    db_url: str, sql: SQL, tenants: None
) -> None:
    # The check ingest_insert_events makes under the ingest lock, for a tenant deleted
    # between a batch's runs step and its commit (the deletion waits for that lock).
    with psycopg.connect(db_url) as conn:
        PartitionCache().ensure(conn, {datetime.now(UTC).date()})
        batch = events_to_json(models(event("run_started", tenant_id="nobody"))).decode()
        conn.execute("SELECT ingest_stage_batch(%s::json)", (batch,))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="does not exist"):
            conn.execute("SELECT ingest_insert_events()")
    assert sql("SELECT count(*) FROM events") == [(0,)]
