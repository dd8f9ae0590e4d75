"""An agent process as a new user runs it: where its spans go, and how long its exit takes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _support import ROOT, free_port

AGENT = Path(__file__).with_name("one_call_agent.py")
Sql = Callable[..., list[tuple[Any, ...]]]
pytestmark = pytest.mark.timeout(120)


def _run_agent(tmp_path: Path, **env: str) -> tuple[float, str]:
    """Run the one-call agent; return the seconds from its last line to its exit, and stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RUNLEDGER_"))}
    clean.update(RUNLEDGER_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT / "exporter"), **env)
    proc = subprocess.run(
        [sys.executable, str(AGENT)], env=clean, capture_output=True, text=True, timeout=60
    )
    ended = time.time()
    assert proc.returncode == 0, proc.stderr
    last = next(line for line in proc.stdout.splitlines() if line.startswith("exiting "))
    return ended - float(last.split()[1]), proc.stderr


def test_exit_is_bounded_when_no_receiver_listens(tmp_path: Path) -> None:
    # Nothing listens at RUNLEDGER_URL (and so at its /v1/traces): events stay in the spool
    # for RUNLEDGER_SHUTDOWN_TIMEOUT, spans are dropped after the telemetry bound.
    dead = f"http://127.0.0.1:{free_port()}"
    took, stderr = _run_agent(
        tmp_path, RUNLEDGER_URL=dead, RUNLEDGER_TOKEN="rl_x", RUNLEDGER_ENFORCE_CAPS="0",
        RUNLEDGER_SHUTDOWN_TIMEOUT="1", RUNLEDGER_TELEMETRY_SHUTDOWN_TIMEOUT="1",
    )  # fmt: skip
    # The documented bound: RUNLEDGER_SHUTDOWN_TIMEOUT + RUNLEDGER_TELEMETRY_SHUTDOWN_TIMEOUT
    # (2 s here), plus the interpreter's own teardown.
    assert took < 3.5, (took, stderr)
    assert "telemetry shutdown not done within 1.0 s" in stderr


def test_spans_go_to_runledgers_receiver_without_an_otlp_endpoint(
    tmp_path: Path, control_server: str, agent: dict[str, str], sql: Sql
) -> None:
    _run_agent(
        tmp_path, RUNLEDGER_URL=control_server, RUNLEDGER_TOKEN=agent["token"],
        RUNLEDGER_ENFORCE_CAPS="0",
    )  # fmt: skip
    spans = sql("SELECT name, tenant_id FROM trace_spans ORDER BY started_at")
    assert ("chat gpt-4.1", "acme") in spans
    (run_id,) = sql("SELECT DISTINCT run_id FROM events")[0]
    assert sql("SELECT count(*) FROM trace_spans WHERE run_id = %s", run_id) == [(len(spans),)]
    # The SDK's call reached the ledger on its events: its span is stored, never counted again.
    assert sql("SELECT count(*) FROM events WHERE type = 'model_call'") == [(0,)]
    assert sql("SELECT tokens_in, tokens_out FROM runs") == [(1200, 300)]
