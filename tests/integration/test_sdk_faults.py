"""Faults against the real control service and PostgreSQL: outages and a killed agent."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from _support import ControlService
from runledger.sdk import CostOptions, DeliveryOptions, Ledger

Sql = Callable[..., list[tuple[Any, ...]]]
AGENT = Path(__file__).with_name("sdk_agent.py")


def _work(ledger: Ledger, runs: int, tag: str) -> tuple[list[str], Decimal]:
    ids: list[str] = []
    for i in range(runs):
        with ledger.run("acme", f"proj-{tag}", "build", "implementer") as run:
            for version in (1, 2):
                with run.model_call("gpt-4.1", cost_usd="0.002") as call:
                    call.record(tokens_in=100, tokens_out=10)
                ids.append(run.artifact_written(f"{tag}-{i}.md", version))
    return ids, Decimal("0.002") * 2 * runs


def test_service_down_for_a_while_then_back_every_event_arrives_exactly_once(
    control_service: ControlService,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    sql: Sql,
) -> None:
    # Delivery, not the tenant cap: without the ledger, capped spend would be refused.
    ledger = make_ledger(
        control_service.url, agent["token"], costs=CostOptions(enforce_tenant_cap=False)
    )
    # Down from the start: the agent is never blocked, everything waits in the spool.
    t0 = time.perf_counter()
    first, cost_a = _work(ledger, 5, "a")
    assert time.perf_counter() - t0 < 5.0
    assert not ledger.flush(1.0)
    assert ledger.pending() == 5 * 4
    control_service.start()
    assert ledger.flush(30)
    # Down again in the middle of the work, then back.
    control_service.stop()
    second, cost_b = _work(ledger, 5, "b")
    assert not ledger.flush(1.0)
    control_service.start()
    assert ledger.flush(30)

    per_event = sql("SELECT event_id::text, count(*) FROM events GROUP BY 1")
    assert all(count == 1 for _, count in per_event)
    assert len(per_event) == 10 * 4  # run_started, 2 x artifact_written, run_finished
    stored = {event_id for event_id, _ in per_event}
    assert set(first + second) <= stored
    totals = sql(
        "SELECT count(*), sum(tokens_in), sum(cost_usd) FROM runs WHERE status = 'succeeded'"
    )
    assert totals == [(10, 10 * 2 * 100, cost_a + cost_b)]
    assert ledger.pending() == 0


def _read_lines(proc: subprocess.Popen[str], want_events: int, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while sum(1 for line in lines if line.startswith("event")) < want_events:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"agent stopped early: {lines[-5:]}")
        lines.append(proc.stdout.readline().strip())
    return lines


def test_agent_killed_mid_run_then_restarted_delivers_every_spooled_event_once(
    control_server: str, agent: dict[str, str], tmp_path: Path, sql: Sql
) -> None:
    spool = tmp_path / "agent-spool.db"
    args = [control_server, agent["token"], str(spool)]
    proc = subprocess.Popen(
        [sys.executable, str(AGENT), "work", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        lines = _read_lines(proc, want_events=300, timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.stdout is not None
    lines += [line.strip() for line in proc.stdout.read().splitlines()]
    proc.stdout.close()

    with sqlite3.connect(spool) as conn:
        spooled = [json.loads(b)["event_id"] for (b,) in conn.execute("SELECT body FROM outbox")]
        open_runs = [r[0] for r in conn.execute("SELECT run_id FROM open_runs")]
    delivered_before = {r[0] for r in sql("SELECT event_id::text FROM events")}
    assert spooled, "the kill should leave undelivered events in the spool"
    assert len(open_runs) <= 1

    drain = subprocess.run(
        [sys.executable, str(AGENT), "drain", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert "drained True pending=0" in drain.stdout

    per_event = dict(sql("SELECT event_id::text, count(*) FROM events GROUP BY 1"))
    assert all(count == 1 for count in per_event.values()), "an event was stored twice"
    printed = [line.split()[1] for line in lines if line.startswith("event ")]
    assert set(printed) <= set(per_event)
    assert set(spooled) <= set(per_event)
    assert delivered_before <= set(per_event)
    # The usage of every recorded model call reached the runs rows (the killed run's too).
    calls = sum(1 for line in lines if line == "call")
    tokens_in = sql("SELECT coalesce(sum(tokens_in), 0) FROM runs")[0][0]
    assert 10 * calls <= tokens_in <= 10 * (calls + 1)
    for run_id in open_runs:
        assert sql("SELECT status, error FROM runs WHERE run_id = %s", run_id) == [
            ("failed", "the agent process exited before the run ended")
        ]
    with sqlite3.connect(spool) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM open_runs").fetchone() == (0,)


def test_a_new_ledger_on_the_spool_of_a_dead_process_recovers_its_open_run(
    control_server: str, agent: dict[str, str], tmp_path: Path, sql: Sql
) -> None:
    spool = tmp_path / "shared.db"
    script = (
        "import os, sys\n"
        "from runledger.sdk import CostOptions, DeliveryOptions, Ledger\n"
        f"ledger = Ledger(None, delivery=DeliveryOptions(spool_path={str(spool)!r}),"
        " environ={'OTEL_SDK_DISABLED': '1'}, costs=CostOptions(enforce_tenant_cap=False))\n"
        "run = ledger.start_run('acme', 'proj-1', 'build', 'implementer', run_id='run-orphan')\n"
        "with run.model_call('gpt-4.1', cost_usd='0.5') as call:\n"
        "    call.record(tokens_in=7, tokens_out=3)\n"
        "os._exit(0)  # dies without closing: no run_finished, nothing delivered\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with Ledger(
        control_server,
        agent["token"],
        delivery=DeliveryOptions(spool_path=spool),
        environ={"OTEL_SDK_DISABLED": "1"},
    ) as ledger:
        assert ledger.flush(15)
    row = sql("SELECT status, tokens_in, tokens_out, cost_usd, error FROM runs")
    assert row == [
        ("failed", 7, 3, Decimal("0.5"), "the agent process exited before the run ended")
    ]


def test_events_are_delivered_at_interpreter_exit_without_an_explicit_close(
    control_server: str, agent: dict[str, str], tmp_path: Path, sql: Sql
) -> None:
    script = (
        "from runledger.sdk import DeliveryOptions, Ledger\n"
        f"ledger = Ledger({control_server!r}, {agent['token']!r},"
        f" delivery=DeliveryOptions(spool_path={str(tmp_path / 'exit.db')!r}),"
        " environ={'OTEL_SDK_DISABLED': '1'})\n"
        "with ledger.run('acme', 'proj-1', 'build', 'implementer', run_id='run-exit') as run:\n"
        "    run.artifact_written('a.md', 1)\n"
        "open = ledger.start_run('acme', 'proj-1', 'build', 'validator', run_id='run-left')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sql("SELECT run_id, status, error FROM runs ORDER BY run_id") == [
        ("run-exit", "succeeded", None),
        ("run-left", "failed", "the agent's ledger was closed before the run ended"),
    ]
