"""Daily partitions of the ``events`` table."""

from __future__ import annotations

import re
from datetime import date, timedelta

import psycopg

from runledger.store.locks import lock_partitions

__all__ = ["PartitionCache", "create_partition", "list_partitions", "partition_name"]

_NAME_RE = re.compile(r"^events_p(\d{8})$")


def partition_name(day: date) -> str:
    """Return the name of the partition holding UTC day ``day``."""
    return f"events_p{day:%Y%m%d}"


def create_partition(conn: psycopg.Connection, day: date) -> None:
    """Create the partition of ``day`` if it does not exist (caller holds ``lock_partitions``)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF events "
        f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') "
        f"TO ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
    )


def list_partitions(conn: psycopg.Connection) -> dict[date, str]:
    """Return the existing event partitions by day."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    found = {}
    for (name,) in rows:
        match = _NAME_RE.match(name)
        if match:
            y, m, d = match[1][:4], match[1][4:6], match[1][6:]
            found[date(int(y), int(m), int(d))] = name
    return found


class PartitionCache:
    """Remember which daily partitions exist so ingest checks the catalog once per day."""

    def __init__(self) -> None:
        self._known: set[date] = set()

    def ensure(self, conn: psycopg.Connection, days: set[date]) -> None:
        """Create the partitions of ``days`` that this process has not seen yet."""
        missing = days - self._known
        if not missing:
            return
        lock_partitions(conn)
        existing = set(list_partitions(conn))
        for day in sorted(missing - existing):
            create_partition(conn, day)
        self._known |= missing

    def forget(self) -> None:
        """Drop the cache (after retention dropped partitions, or an insert found none)."""
        self._known.clear()
