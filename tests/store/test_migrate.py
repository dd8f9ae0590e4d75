"""Migrations: from empty, re-run, a failing one, a changed one, and what they create."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
import pytest

from _support import event
from runledger.events import events_to_json, validate_batch
from runledger.store import migrate
from runledger.store.locks import lock_ingest
from runledger.store.migrate import Migration, MigrationError, applied_versions, migrations
from runledger.store.partitions import PartitionCache

SPEC_TABLES = {"runs", "events", "caps", "failures", "prompt_audit", "trace_spans"}
IMPLIED_TABLES = {
    "tenants", "projects", "playbooks", "cap_raises", "audit_log", "notifications",
    "publisher_freezes", "daily_rollups", "api_tokens", "proofs",
}  # fmt: skip


@pytest.fixture
def empty_url(pg_server: Any) -> Any:
    admin = pg_server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mig_empty WITH (FORCE)")
        conn.execute("CREATE DATABASE mig_empty")
    yield pg_server.get_uri("mig_empty")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mig_empty WITH (FORCE)")


def test_migrate_from_empty_then_rerun_is_a_no_op(empty_url: str) -> None:
    first = migrate(empty_url)
    assert [m.version for m in first] == [m.version for m in migrations()]
    assert migrate(empty_url) == []
    with psycopg.connect(empty_url) as conn:
        assert applied_versions(conn) == [m.version for m in migrations()]
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'events'").fetchone()
    assert SPEC_TABLES | IMPLIED_TABLES <= tables
    assert kind == ("p",), "events must be a partitioned table"


def test_failing_migration_is_rolled_back_and_named(empty_url: str) -> None:
    good = Migration(9001, "good", "CREATE TABLE good_one (x int);")
    bad = Migration(9002, "bad", "CREATE TABLE half_done (x int); SELECT no_such_function();")
    later = Migration(9003, "later", "CREATE TABLE later_one (x int);")
    with pytest.raises(MigrationError, match=r"migration 9002_bad failed: .*no_such_function"):
        migrate(empty_url, [good, bad, later])
    with psycopg.connect(empty_url) as conn:
        assert applied_versions(conn) == [9001]
        found = conn.execute(
            "SELECT to_regclass('good_one') IS NOT NULL, to_regclass('half_done') IS NULL,"
            " to_regclass('later_one') IS NULL"
        ).fetchone()
    assert found == (True, True, True)
    # Fixed and re-run: only what is pending is applied.
    fixed = Migration(9002, "bad", "CREATE TABLE half_done (x int);")
    assert [m.version for m in migrate(empty_url, [good, fixed, later])] == [9002, 9003]


def test_retention_waits_for_the_lock_an_open_ingest_holds(
    db_url: str, make_tenant: Callable[..., str]
) -> None:
    # Retention drops a day's partition under lock_ingest; ingest_batch takes the same lock
    # in SQL. Were the two to take different keys, retention could drop a day mid-ingest.
    make_tenant("acme")
    batch = events_to_json(validate_batch([event("run_started")])).decode()
    with psycopg.connect(db_url) as writer:
        with writer.transaction():
            PartitionCache().ensure(writer, {datetime.now(UTC).date()})
        assert writer.execute("SELECT * FROM ingest_batch(%s::json)", (batch,)).fetchall() == []
        with psycopg.connect(db_url) as retention:
            retention.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                lock_ingest(retention)
        writer.rollback()
        with psycopg.connect(db_url) as retention:
            retention.execute("SET lock_timeout = '200ms'")
            lock_ingest(retention)


def test_applied_migrations_record_the_checksum_of_their_text(empty_url: str) -> None:
    migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        recorded = dict(conn.execute("SELECT version, checksum FROM schema_migrations"))
    packaged = resources.files("runledger.store").joinpath("migrations")
    assert recorded == {
        m.version: hashlib.sha256(packaged.joinpath(f"{m.label}.sql").read_bytes()).hexdigest()
        for m in migrations()
    }


def test_a_migration_changed_after_it_was_applied_is_refused(empty_url: str) -> None:
    first = Migration(9001, "first", "CREATE TABLE first_one (x int);")
    second = Migration(9002, "second", "CREATE TABLE second_one (x int);")
    migrate(empty_url, [first])
    edited = Migration(9001, "first", "CREATE TABLE first_one (x int, y int);")
    with pytest.raises(
        MigrationError,
        match=r"^migration 9001_first\.sql was changed after it was applied to this database "
        r"\(sha256 \w{12} recorded, \w{12} now\)\. Applied migrations never change: restore "
        r"9001_first\.sql as it was and write the change as a new migration, 9003_<what>\.sql$",
    ):
        migrate(empty_url, [edited, second])
    with psycopg.connect(empty_url) as conn:
        assert applied_versions(conn) == [9001], "nothing after the changed one is applied"
        assert conn.execute("SELECT to_regclass('second_one')").fetchone() == (None,)


def test_the_packaged_baseline_changed_after_it_was_applied_is_refused(empty_url: str) -> None:
    migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1")
    with pytest.raises(MigrationError, match=r"^migration 0001_baseline\.sql was changed"):
        migrate(empty_url)


def test_bookkeeping_from_before_checksums_is_refused(empty_url: str) -> None:
    with psycopg.connect(empty_url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'ledger')")
    with pytest.raises(
        MigrationError,
        match=r"^this database was migrated by a pre-release runledger \(schema_migrations has "
        r"no checksum column\), whose migrations the baseline replaced: drop the database, "
        r"create it empty and run `runledger migrate` again$",
    ):
        migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("SELECT to_regclass('events')").fetchone() == (None,)
