"""Retention: old day partitions are rolled up then dropped; newer ones stay."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from runledger.store.partitions import create_partition, list_partitions
from runledger.store.retention import run_retention, validate_retention_days

SQL = Callable[..., list[tuple[Any, ...]]]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def place_events(db_url: str, day: date, count: int, cost: str = "0.5") -> None:
    """Write events straight into the partition of ``day`` (the API refuses old events)."""
    at = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
    with psycopg.connect(db_url) as conn:
        create_partition(conn, day)
        for i in range(count):
            event_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO events (event_id, type, tenant_id, project_id, run_id, phase, role,"
                " occurred_at, tokens_in, tokens_out, cost_usd, model)"
                " VALUES (%s, 'artifact_written', 'acme', 'p1', %s, 'build', 'implementer', %s,"
                " 100, 10, %s, 'gpt-4o')",
                (event_id, f"run-{i % 2}", at, Decimal(cost)),
            )
        conn.execute(
            "INSERT INTO prompt_audit (run_id, tenant_id, prompt_redacted, created_at)"
            " VALUES ('run-0', 'acme', 'summarise [REDACTED:email]', %s)",
            (at,),
        )


@pytest.fixture
def history(db_url: str, make_tenant: Callable[..., str]) -> dict[str, date]:
    make_tenant("acme")
    days = {
        "ancient": NOW.date() - timedelta(days=45),
        "expired": NOW.date() - timedelta(days=31),
        "edge": NOW.date() - timedelta(days=30),
        "recent": NOW.date() - timedelta(days=2),
        "today": NOW.date(),
    }
    for name, day in days.items():
        place_events(db_url, day, count=4 if name != "today" else 1)
    return days


def test_retention_drops_only_partitions_older_than_the_window(
    db_url: str, sql: SQL, history: dict[str, date]
) -> None:
    report = run_retention(db_url, days=30, now=NOW)

    with psycopg.connect(db_url) as conn:
        left = set(list_partitions(conn))
    assert history["ancient"] not in left and history["expired"] not in left
    assert {history["edge"], history["recent"], history["today"]} <= left
    assert sorted(report.dropped_partitions) == [
        f"events_p{history['ancient']:%Y%m%d}",
        f"events_p{history['expired']:%Y%m%d}",
    ]
    assert sql("SELECT count(*) FROM events") == [(4 + 4 + 1,)]
    assert sql("SELECT count(*) FROM prompt_audit") == [(3,)]
    # Every closed day, dropped or not, is in the rollups; today is not closed yet.
    rolled = sql("SELECT day, events, runs, tokens_in, cost_usd FROM daily_rollups ORDER BY day")
    assert rolled == [
        (history[name], 4, 2, 400, Decimal("2.0"))
        for name in ("ancient", "expired", "edge", "recent")
    ]
    # Tomorrow's partition exists ahead of time, so ingest after midnight needs no DDL.
    assert NOW.date() + timedelta(days=1) in left


def test_retention_is_safe_to_run_again(db_url: str, sql: SQL, history: dict[str, date]) -> None:
    run_retention(db_url, days=30, now=NOW)
    before = sql("SELECT day, events, cost_usd, rolled_up_at FROM daily_rollups ORDER BY day")
    again = run_retention(db_url, days=30, now=NOW)
    assert again.dropped_partitions == []
    assert again.rolled_up_days == []
    assert (
        sql("SELECT day, events, cost_usd, rolled_up_at FROM daily_rollups ORDER BY day") == before
    )


def test_late_events_refresh_the_rollup_of_their_day(
    db_url: str, sql: SQL, history: dict[str, date]
) -> None:
    run_retention(db_url, days=30, now=NOW)
    place_events(db_url, history["recent"], count=2, cost="1.25")
    report = run_retention(db_url, days=30, now=NOW)
    assert report.rolled_up_days == [history["recent"]]
    assert sql("SELECT events, cost_usd FROM daily_rollups WHERE day = %s", history["recent"]) == [
        (6, Decimal("4.50"))
    ]


def test_rollups_older_than_13_months_are_deleted(db_url: str, sql: SQL) -> None:
    for months_ago in (12, 14):
        day = (NOW - timedelta(days=months_ago * 31)).date()
        sql(
            "INSERT INTO daily_rollups (day, tenant_id, phase, role, type, events, runs,"
            " tokens_in, tokens_out, cost_usd) VALUES (%s, 'acme', 'b', 'r', 't', 1, 1, 1, 1, 1)",
            day,
        )
    report = run_retention(db_url, days=30, now=NOW)
    assert report.deleted_rollups == 1
    assert sql("SELECT count(*) FROM daily_rollups") == [(1,)]


def test_dry_run_changes_nothing(db_url: str, sql: SQL, history: dict[str, date]) -> None:
    report = run_retention(db_url, days=14, now=NOW, dry_run=True)
    assert len(report.dropped_partitions) == 3
    assert sql("SELECT count(*) FROM events") == [(17,)]
    assert sql("SELECT count(*) FROM daily_rollups") == [(0,)]


@pytest.mark.parametrize("bad", ["13", "31", "thirty", "20.5", ""])
def test_retention_window_outside_14_to_30_days_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"whole number of days from 14 to 30, got"):
        validate_retention_days(bad)


def test_cli_names_the_bad_window(db_url: str) -> None:
    env = dict(os.environ, RUNLEDGER_DATABASE_URL=db_url)
    out = subprocess.run(
        [sys.executable, "-m", "runledger.cli", "retention", "--days", "90"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "retention must be a whole number of days from 14 to 30, got '90'" in out.stderr
    env["RUNLEDGER_RETENTION_DAYS"] = "7"
    out = subprocess.run(
        [sys.executable, "-m", "runledger.cli", "retention", "--dry-run"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "RUNLEDGER_RETENTION_DAYS: retention must be" in out.stderr
