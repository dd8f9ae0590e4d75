"""Advisory locks: the keys the ledger's writers share, and the order they are taken in.

Lock order, always: ``lock_partitions`` before ``lock_ingest``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import psycopg

__all__ = [
    "MIGRATION_LOCK",
    "PARTITION_LOCK",
    "lock_ingest",
    "lock_migrations",
    "lock_partitions",
    "lock_runs",
]

# Serialises partition DDL ("runlpart"); always taken before the ingest lock.
PARTITION_LOCK = 0x72756E6C_70617274
# One migrator at a time ("runlmigr").
MIGRATION_LOCK = 0x72756E6C_6D696772


def lock_ingest(conn: psycopg.Connection) -> None:
    """Take the ingest lock until the transaction ends, as ``ingest_batch`` does.

    Writers hold it from inserting events until commit, so ``events.seq`` order is commit
    order; retention holds it to drop a day under no writer. Its key is defined once, by
    the SQL function ``ingest_lock_key()`` (migration 0001_baseline).
    """
    conn.execute("SELECT pg_advisory_xact_lock(ingest_lock_key())")


def lock_partitions(conn: psycopg.Connection) -> None:
    """Take the partition DDL lock until the transaction ends (before ``lock_ingest``)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))


def lock_migrations(conn: psycopg.Connection) -> None:
    """Take the migrations lock until the transaction ends: one migrator at a time."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))


def _run_key(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big", signed=True)


def lock_runs(conn: psycopg.Connection, run_ids: Iterable[str]) -> None:
    """Serialise writers of the same runs until commit, in one order so none deadlock.

    Prompt-audit writers take these; a run's key is a hash of its id, so two runs may share
    a key now and then, which only serialises them.
    """
    for run_id in sorted(set(run_ids)):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_run_key(run_id),))
