"""Retention: roll events up per day, then drop whole day partitions past the window."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from runledger import _env
from runledger.store.locks import lock_ingest, lock_partitions
from runledger.store.partitions import create_partition, list_partitions

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "ROLLUP_MONTHS",
    "RetentionReport",
    "retention_days_from_env",
    "run_retention",
    "validate_retention_days",
]

DEFAULT_RETENTION_DAYS = 30
MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 14, 30
ROLLUP_MONTHS = 13


def validate_retention_days(value: object) -> int:
    """Return ``value`` as a retention window in days, or raise naming the allowed range."""
    try:
        days = int(str(value).strip())
    except ValueError:
        days = -1
    if str(days) != str(value).strip() or not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:
        raise ValueError(
            f"retention must be a whole number of days from {MIN_RETENTION_DAYS} to "
            f"{MAX_RETENTION_DAYS}, got {value!r}"
        )
    return days


def retention_days_from_env() -> int:
    """Return ``RUNLEDGER_RETENTION_DAYS`` validated, or the default of 30."""
    raw = os.environ.get(_env.RETENTION_DAYS)
    if raw is None or raw == "":
        return DEFAULT_RETENTION_DAYS
    try:
        return validate_retention_days(raw)
    except ValueError as exc:
        raise ValueError(f"{_env.RETENTION_DAYS}: {exc}") from None


@dataclass
class RetentionReport:
    """What one retention pass did (or, with ``dry_run``, would do)."""

    cutoff: date
    dropped_partitions: list[str] = field(default_factory=list)
    rolled_up_days: list[date] = field(default_factory=list)
    deleted_prompt_audit: int = 0
    deleted_trace_spans: int = 0
    deleted_rollups: int = 0
    deleted_artifact_snapshots: int = 0
    dry_run: bool = False


_ROLLUP_SQL = """
INSERT INTO daily_rollups (day, tenant_id, model, phase, role, type, events, runs,
                           tokens_in, tokens_out, cost_usd)
SELECT %(day)s, tenant_id, COALESCE(model, ''), phase, role, type, count(*),
       count(DISTINCT run_id), sum(tokens_in), sum(tokens_out), sum(cost_usd)
FROM {partition}
GROUP BY tenant_id, COALESCE(model, ''), phase, role, type
"""


def _needs_rollup(conn: psycopg.Connection, day: date, partition: str) -> bool:
    row = conn.execute(
        f"SELECT (SELECT max(created_at) FROM {partition}),"
        " (SELECT min(rolled_up_at) FROM daily_rollups WHERE day = %s)",
        (day,),
    ).fetchone()
    newest_event, rolled_at = row if row else (None, None)
    if newest_event is None:
        return False
    return rolled_at is None or newest_event >= rolled_at


def _rollup(conn: psycopg.Connection, day: date, partition: str) -> None:
    conn.execute("DELETE FROM daily_rollups WHERE day = %s", (day,))
    conn.execute(_ROLLUP_SQL.format(partition=partition).encode(), {"day": day})


def _forget_event_ids(conn: psycopg.Connection, day: date) -> None:
    """Delete the ids of ``day``'s events (its partition was just dropped) from event_ids."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    conn.execute(
        "DELETE FROM event_ids WHERE occurred_at >= %s AND occurred_at < %s",
        (start, start + timedelta(days=1)),
    )


def run_retention(
    url: str,
    *,
    days: int = DEFAULT_RETENTION_DAYS,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Roll up closed days, drop partitions older than ``days``, prune dependants.

    Safe to run repeatedly and concurrently with ingest: each partition is rolled up and
    dropped, with its events' ids, in one transaction holding the ingest lock.
    """
    days = validate_retention_days(days)
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    cutoff = today - timedelta(days=days)
    cutoff_ts = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    report = RetentionReport(cutoff=cutoff, dry_run=dry_run)
    with psycopg.connect(url) as conn:
        partitions = list_partitions(conn)
        conn.rollback()
        for day, name in sorted(partitions.items()):
            if day >= today:
                continue
            expired = day < cutoff
            with conn.transaction(force_rollback=dry_run):
                lock_ingest(conn)
                if _needs_rollup(conn, day, name):
                    _rollup(conn, day, name)
                    report.rolled_up_days.append(day)
                if expired:
                    conn.execute(f"DROP TABLE {name}")
                    _forget_event_ids(conn, day)
                    report.dropped_partitions.append(name)
        with conn.transaction(force_rollback=dry_run):
            # Same lock order as ingest: partitions first, then the ingest lock.
            lock_partitions(conn)
            lock_ingest(conn)
            report.deleted_prompt_audit = conn.execute(
                "DELETE FROM prompt_audit WHERE created_at < %s", (cutoff_ts,)
            ).rowcount
            report.deleted_trace_spans = conn.execute(
                "DELETE FROM trace_spans WHERE started_at < %s", (cutoff_ts,)
            ).rowcount
            # Artifact contents are raw, high-cardinality data: kept as long as the events.
            report.deleted_artifact_snapshots = conn.execute(
                "DELETE FROM artifact_snapshots WHERE created_at < %s", (cutoff_ts,)
            ).rowcount
            report.deleted_rollups = conn.execute(
                "DELETE FROM daily_rollups WHERE day < (%s::date - make_interval(months => %s))",
                (today, ROLLUP_MONTHS),
            ).rowcount
            for ahead in (today, today + timedelta(days=1)):
                create_partition(conn, ahead)
    return report
