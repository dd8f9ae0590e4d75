"""Every fixture of the suite: one real PostgreSQL per session, one fresh database per test,
control services, Ledgers, cost stores and exporter databases. Helpers live in _support/."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _support import ControlService
from _support.clock import Clock
from _support.exporter import create_database
from _support.sdk import OtlpReceiver, Telemetry
from runledger.control import create_app
from runledger.sdk import DeliveryOptions, Ledger, TelemetryOptions
from runledger.store import CapAdmin, Database, LeaseStore, embedded_server, migrate
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

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


# --- SDK: in-memory telemetry and Ledgers that close themselves --------------------------


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Real SDK tracer and logger providers whose spans and logs stay in memory."""
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.logger_provider.shutdown()


@pytest.fixture
def make_ledger(tmp_path: Path, telemetry: Telemetry) -> Iterator[Callable[..., Ledger]]:
    """Build Ledgers with in-memory telemetry and a private spool each; closed at teardown."""
    made: list[Ledger] = []

    def make(url: str | None = None, token: str | None = None, **kwargs: Any) -> Ledger:
        spool = tmp_path / f"spool-{len(made)}" / "events.db"
        kwargs.setdefault("delivery", DeliveryOptions(spool_path=spool))
        kwargs.setdefault(
            "telemetry",
            TelemetryOptions(
                tracer_provider=telemetry.tracer_provider,
                logger_provider=telemetry.logger_provider,
            ),
        )
        kwargs.setdefault("environ", {})
        ledger = Ledger(url, token, **kwargs)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close(timeout=1.0)


@pytest.fixture
def agent(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    """Tenant ``acme`` and an agent token for it."""
    make_tenant("acme")
    return {"tenant": "acme", "token": make_token("agent", "acme")}


@pytest.fixture
def agent_token(
    make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> Callable[[str, str], str]:
    """Create a tenant with a daily cap and return an agent token for it."""

    def make(tenant: str, cap: str) -> str:
        make_tenant(tenant, cap)
        return make_token("agent", tenant)

    return make


@pytest.fixture
def control_service(db_url: str) -> Iterator[ControlService]:
    """A control service the test can stop and start again (not started yet)."""
    service = ControlService(db_url)
    yield service
    service.stop()


@pytest.fixture
def control(db_url: str) -> Iterator[ControlService]:
    """A started control service on a free loopback port, stopped by PID at teardown."""
    service = ControlService(db_url)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


# --- Cost controls: lease and cap stores, an injectable clock ----------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def leases(db: Database) -> LeaseStore:
    """A lease store on the real database, using the database's clock."""
    return LeaseStore(db)


@pytest.fixture
def clocked_leases(db: Database, clock: Clock) -> LeaseStore:
    """A lease store whose notion of now is the injected clock."""
    return LeaseStore(db, clock=clock)


@pytest.fixture
def cap_admin(db: Database) -> CapAdmin:
    """Cap administration on the real database, using the database's clock."""
    return CapAdmin(db)


@pytest.fixture
def clocked_client(db: Database, clock: Clock) -> Iterator[Any]:
    """A Flask test client of the control app with the injected clock."""
    app = create_app({"DATABASE": db, "TESTING": True, "CLOCK": clock})
    yield app.test_client()


# --- Exporter: one database and work folder per test module ------------------------------


@pytest.fixture(scope="module")
def module_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exporter")


@pytest.fixture(scope="module")
def module_db_url(pg_server: Any, template_url: str) -> Iterator[str]:
    """A fresh migrated database shared by the tests of one module."""
    url, drop = create_database(pg_server)
    yield url
    drop()
