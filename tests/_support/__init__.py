"""Helpers shared by tests: ports, waiting, process cleanup by PID, event factories."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from runledger._local import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder."""

__all__ = [
    "ROOT",
    "ControlService",
    "caps_row",
    "event",
    "free_port",
    "local_nginx_config",
    "stop_process",
    "wait_http",
]

NGINX_CONF = ROOT / "nginx" / "nginx.conf"


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers (any status), or fail naming the URL."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A valid event of ``type_`` with sensible defaults, overridable field by field."""
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "tenant_id": "acme",
        "project_id": "proj-1",
        "run_id": "run-1",
        "phase": "build",
        "role": "implementer",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    base.update(fields)
    return base


def caps_row(sql: Callable[..., list[tuple[Any, ...]]], tenant: str) -> dict[str, Any]:
    """Return the latest cap row of ``tenant`` with the cap's own account of spend."""
    rows = sql(
        "SELECT c.daily_cap_usd, c.settled_usd, c.reserved_usd, c.spent_usd, c.leased_spent_usd,"
        " u.spend_usd, u.at_80, u.at_100, c.blocked, c.date FROM caps c"
        " JOIN cap_usage u USING (tenant_id, date) WHERE tenant_id = %s ORDER BY date DESC",
        tenant,
    )
    keys = ("cap", "settled", "reserved", "spent", "leased", "spend", "at_80", "at_100",
            "blocked", "date")  # fmt: skip
    return dict(zip(keys, rows[0], strict=True))


class ControlService:
    """The real control service (gunicorn, 2 workers) on a fixed loopback port, restartable;
    stopped by PID."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, RUNLEDGER_DATABASE_URL=self.db_url)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runledger.cli", "control", "--bind",
             f"127.0.0.1:{self.port}", "--workers", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_http(self.url + "/healthz", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def local_nginx_config(tmp: Path, *, listen: int, upstream: int) -> Path:
    """Write the production nginx.conf for this machine: ``listen`` on loopback, the control
    service at ``upstream``, temporary files under ``tmp``; return its path."""
    text = NGINX_CONF.read_text()
    replaced = {
        "server control:8480;": f"server 127.0.0.1:{upstream};",
        "listen 8480;": f"listen 127.0.0.1:{listen};",
        "http {": "http {\n"
        + "".join(
            f"    {kind}_temp_path {tmp / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    }
    for old, new in replaced.items():
        assert text.count(old) == 1, f"nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path
