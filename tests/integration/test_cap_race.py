"""The concurrency proof: 64 runs in 4 processes race on one tenant's daily cap.

Settled spend never exceeds the cap, at least 99% of it is usable, and the leases of
workers killed mid-run are reclaimed with nothing leaked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from _support import stop_process
from runledger.store import Database, LeaseStore

CAP = Decimal("3")
PROCESSES = 4
THREADS = 16
TTL_S = 2.0
WORKER = Path(__file__).with_name("_race_worker.py")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_64_racing_runs_never_overspend_and_use_the_cap(
    control_server: str, db_url: str, make_tenant: Callable[..., str],
    make_token: Callable[..., str], sql: Callable[..., list[tuple[Any, ...]]],
) -> None:  # fmt: skip
    make_tenant("race", str(CAP))
    token = make_token("agent", "race")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                control_server,
                token,
                "race",
                str(THREADS),
                str(TTL_S),
                str(seed),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in range(PROCESSES)
    ]
    victims, survivors = procs[:2], procs[2:]
    try:
        # Kill two processes mid-run, while their 32 runs hold open leases.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            spent = sql("SELECT COALESCE(sum(spent_usd), 0) FROM caps WHERE tenant_id = 'race'")
            if spent[0][0] >= CAP / 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the race made no progress within 60 s")
        held = sql("SELECT count(*) FROM cap_leases WHERE status = 'open'")[0][0]
        for proc in victims:
            assert proc.poll() is None, "a victim finished before it could be killed"
            proc.kill()
            proc.wait(10)
        assert held > 0
        results = []
        for proc in survivors:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    finally:
        for proc in procs:
            stop_process(proc)

    assert len(results) == (PROCESSES - len(victims)) * THREADS
    assert {r["stopped"] for r in results} == {"cap"}, [r for r in results if r["stopped"] != "cap"]

    # Dead workers' leases expire, are held through the grace (one more lifetime) and are
    # reclaimed; nothing stays reserved.
    time.sleep(2 * TTL_S + 0.5)
    db = Database(db_url, max_size=2).open(wait=True)
    try:
        LeaseStore(db).reclaim_expired()
    finally:
        db.close()
    assert sql("SELECT count(*) FROM cap_leases WHERE status = 'open'") == [(0,)]
    assert sql("SELECT count(*) FROM cap_leases WHERE status = 'expired'")[0][0] > 0
    assert sql("SELECT reserved_usd FROM caps WHERE tenant_id = 'race'") == [(0,)]

    # The provider's bill is the ledger's events: within the cap exactly, >= 99% of it used,
    # and the cap's own account of spend matches it to the nano-dollar (nothing counted twice)
    # plus the calls the dead workers' last heartbeats reported in flight, which reclaim keeps
    # counted (a killed call may still be billed; this worker's are not).
    billed = sql("SELECT sum(cost_usd), count(*) FROM events WHERE tenant_id = 'race'")[0]
    spend = sql("SELECT spend_usd FROM cap_usage WHERE tenant_id = 'race'")[0][0]
    kept_per_lease = [
        r[0]
        for r in sql(
            "SELECT spent_usd - ledger_spent_usd FROM cap_leases"
            " WHERE tenant_id = 'race' AND status = 'expired'"
        )
    ]
    # A worker thread makes one call at a time: at most one call's estimate (<= $0.003) in
    # flight, and one reported call whose event the kill stopped.
    assert all(0 <= k <= Decimal("0.006") for k in kept_per_lease), kept_per_lease
    kept = sum(kept_per_lease, Decimal(0))
    assert billed[0] <= CAP
    assert billed[0] >= CAP * Decimal("0.99"), f"only {billed[0]} of {CAP} was usable"
    assert spend == billed[0] + kept
    survivors_spent = sum(Decimal(r["spent"]) for r in results)
    assert survivors_spent < billed[0]  # the killed processes' calls are in the bill too
    assert billed[1] > 500
