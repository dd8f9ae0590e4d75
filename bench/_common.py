"""Shared benchmark plumbing: a throwaway PostgreSQL, a control service, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import requests

from runledger._local import free_port, stop_process
from runledger.store import embedded_server, migrate

__all__ = [
    "control_service", "free_port", "fresh_database", "postgres", "stop_process", "write_result",
]  # fmt: skip

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def postgres() -> Iterator[Any]:
    """Start a real PostgreSQL in a temporary directory; remove it afterwards."""
    base = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    server = embedded_server(base / "pg", keep_running=False)
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(server: Any, name: str) -> str:
    """Create (or recreate) database ``name``, migrate it and return its URL."""
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = str(server.get_uri(name))
    migrate(url)
    return url


@contextmanager
def control_service(db_url: str, workers: int = 2, threads: int = 4) -> Iterator[str]:
    """Run the real control service (gunicorn) on a free loopback port."""
    port = free_port()
    env = dict(os.environ, RUNLEDGER_DATABASE_URL=db_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runledger.cli", "control", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("control service did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        stop_process(proc)


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the figures and where they were measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        **figures,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path
