"""Shared fixtures: one real PostgreSQL per session, one fresh database per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _support import ControlService
from runledger.control import create_app
from runledger.store import Database, embedded_server, migrate
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "rl_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL server for the whole session, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="rl-test-pg-"))
    server = embedded_server(base / "pg", keep_running=False)
    yield server
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_server: Any) -> str:
    """A migrated template database; each test clones it."""
    admin = pg_server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    url = pg_server.get_uri(TEMPLATE_DB)
    migrate(url)
    return str(url)


@pytest.fixture
def db_url(pg_server: Any, template_url: str) -> Iterator[str]:
    """URL of a fresh, migrated database private to this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield str(pg_server.get_uri(name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url, max_size=4).open(wait=True)
    yield database
    database.close()


@pytest.fixture
def sql(db_url: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Run one query on the test database and return its rows."""
    conn = psycopg.connect(db_url, autocommit=True)

    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []

    yield run
    conn.close()


@pytest.fixture
def make_tenant(db_url: str) -> Callable[..., str]:
    def make(tenant_id: str, cap: str = "100") -> str:
        with psycopg.connect(db_url) as conn:
            create_tenant(conn, tenant_id, daily_cap_usd=Decimal(cap))
        return tenant_id

    return make


@pytest.fixture
def make_token(db_url: str) -> Callable[..., str]:
    def make(role: str, tenant_id: str | None = None) -> str:
        with psycopg.connect(db_url) as conn:
            return create_token(conn, role=role, label=f"test-{role}", tenant_id=tenant_id)

    return make


@pytest.fixture
def app(db: Database) -> Any:
    return create_app({"DATABASE": db, "TESTING": True})


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def control_server(db_url: str) -> Iterator[str]:
    """A real control service (gunicorn, 2 workers) on a free loopback port."""
    service = ControlService(db_url)
    service.start()
    try:
        yield service.url
    finally:
        service.stop()
