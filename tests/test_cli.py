"""The administrative CLI: clear errors, nothing half-done."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

SQL = Callable[..., list[tuple[Any, ...]]]


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RUNLEDGER_DATABASE_URL=db_url)
    return subprocess.run(
        [sys.executable, "-m", "runledger.cli", *args], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_migrate_reports_an_up_to_date_schema(db_url: str) -> None:
    out = cli(db_url, "migrate")
    assert out.returncode == 0
    assert out.stdout.strip() == "schema is up to date"


def test_migrate_refuses_a_changed_migration_without_a_traceback(db_url: str, sql: SQL) -> None:
    sql("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    out = cli(db_url, "migrate")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: migration 0001_baseline.sql was changed after it was")
    assert "write the change as a new migration" in out.stderr


def test_tenant_and_token_creation(db_url: str, sql: SQL) -> None:
    out = cli(db_url, "tenant", "create", "acme", "--daily-cap-usd", "12.50")
    assert (out.returncode, out.stdout.strip()) == (0, "tenant acme created")
    again = cli(db_url, "tenant", "create", "acme", "--daily-cap-usd", "99")
    assert again.stdout.strip() == "tenant acme already exists (unchanged)"
    assert sql("SELECT daily_cap_usd FROM tenants") == [(12.5,)]
    token = cli(db_url, "token", "create", "--role", "agent", "--tenant", "acme")
    assert token.returncode == 0 and token.stdout.startswith("rl_")
    assert sql("SELECT role, tenant_id FROM api_tokens") == [("agent", "acme")]
    assert sql("SELECT count(*) FROM api_tokens WHERE token_sha256 = sha256(%s::bytea)",
               token.stdout.strip().encode()) == [(1,)]  # fmt: skip
    # Both admin actions are audited (the unchanged re-create is not an action).
    audit = sql("SELECT actor LIKE 'cli:%%', action, tenant_id, details FROM audit_log ORDER BY at")
    assert audit == [
        (True, "tenant.create", "acme", {"daily_cap_usd": "12.50"}),
        (True, "token.create", "acme", {"role": "agent"}),
    ]
    assert token.stdout.strip() not in str(audit), "the secret never reaches the audit log"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tenant", "create", "acme", "--daily-cap-usd", "abc"],
            "amount must be a number of dollars, not 'abc'",
        ),
        (
            ["tenant", "create", "acme", "--daily-cap-usd", "-1"],
            "amount must be zero or more dollars",
        ),
        (
            ["tenant", "create", "acme", "--daily-cap-usd", "0.0000000001"],
            "amount must have at most 9 decimal places",
        ),
        (["tenant", "create", "bad id", "--daily-cap-usd", "1"], "tenant id 'bad id' must be"),
        (
            ["token", "create", "--role", "agent"],
            "agent tokens belong to a tenant: name one (--tenant)",
        ),
        (["token", "create", "--role", "owner", "--tenant", "nobody"], "unknown tenant 'nobody'"),
        (
            ["token", "create", "--role", "admin", "--tenant", "x"],
            "admin tokens are not bound to a tenant: drop --tenant",
        ),
        (["token", "create", "--role", "root"], "'root' is not one of"),
    ],
)
def test_bad_input_is_refused_naming_the_problem(
    db_url: str, sql: SQL, args: list[str], message: str
) -> None:
    out = cli(db_url, *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert sql("SELECT count(*) FROM tenants") == [(0,)]
    assert sql("SELECT count(*) FROM api_tokens") == [(0,)]
    assert sql("SELECT count(*) FROM audit_log") == [(0,)]
