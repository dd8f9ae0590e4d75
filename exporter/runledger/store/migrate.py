"""Ordered, transactional, idempotent schema migrations.

Applied migrations are append-only: each one's checksum is recorded when it is applied, and a
database whose applied migration no longer matches its file is refused.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from runledger.store.locks import lock_migrations

__all__ = ["Migration", "MigrationError", "applied_versions", "migrate", "migrations"]

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration failed or was changed after it was applied; nothing later was attempted."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        """Return the file name without ``.sql``: ``0001_baseline``."""
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        """Return the SHA-256 of the migration's text, recorded when it is applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """Return the packaged migrations in version order."""
    found = []
    for entry in resources.files("runledger.store").joinpath("migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """Return the versions already applied to the database of ``conn``."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(url: str, pending: list[Migration] | None = None) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied.

    Args:
        url: database to migrate.
        pending: migrations to consider (default: the packaged ones).

    Raises:
        MigrationError: a migration failed, or one already applied differs from its file.
    """
    applied: list[Migration] = []
    candidates = migrations() if pending is None else pending
    with psycopg.connect(url) as conn:
        with conn.transaction():
            lock_migrations(conn)
            _ensure_bookkeeping(conn)
        for migration in candidates:
            with _named(migration), conn.transaction():
                lock_migrations(conn)
                done = conn.execute(
                    "SELECT checksum FROM schema_migrations WHERE version = %s",
                    (migration.version,),
                ).fetchone()
                if done:
                    _check_unchanged(migration, done[0], candidates)
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied.append(migration)
    return applied


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    """Create ``schema_migrations``, or refuse one made before checksums were recorded."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    has_checksums = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute"
        " WHERE attrelid = 'schema_migrations'::regclass AND attname = 'checksum'"
        " AND NOT attisdropped)"
    ).fetchone()
    if not has_checksums or not has_checksums[0]:
        # Only pre-release databases (migrations 0001_ledger to 0005_ingest_batch, squashed
        # into the baseline before anything was deployed) lack the column: nothing to upgrade.
        raise MigrationError(
            "this database was migrated by a pre-release runledger (schema_migrations has no"
            " checksum column), whose migrations the baseline replaced: drop the database,"
            " create it empty and run `runledger migrate` again"
        )


def _check_unchanged(migration: Migration, recorded: str, candidates: list[Migration]) -> None:
    """Refuse a migration whose text differs from what was applied to the database."""
    if recorded == migration.checksum:
        return
    following = max(m.version for m in candidates) + 1
    raise MigrationError(
        f"migration {migration.label}.sql was changed after it was applied to this database"
        f" (sha256 {recorded[:12]} recorded, {migration.checksum[:12]} now). Applied"
        f" migrations never change: restore {migration.label}.sql as it was and write the"
        f" change as a new migration, {following:04d}_<what>.sql"
    )


class _named:
    """Re-raise a database error as MigrationError naming the migration."""

    def __init__(self, migration: Migration) -> None:
        self.migration = migration

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, psycopg.Error):
            raise MigrationError(f"migration {self.migration.label} failed: {exc}") from exc
