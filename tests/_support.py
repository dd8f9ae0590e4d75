"""Helpers shared by tests: ports, waiting, process cleanup by PID, event factories."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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
