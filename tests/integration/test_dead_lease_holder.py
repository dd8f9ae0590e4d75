"""A lease holder SIGKILLed mid-run: survivors get back what it never drew, within a bound,
and the cap holds once its spooled usage is delivered (docs/caps.md, dead holders)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from _support import caps_row, stop_process
from runledger.cost.lease import PgLeaseTransport, TenantBudget, TenantCapReached
from runledger.events import validate_batch
from runledger.store import Database, Ingestor, LeaseStore

D = Decimal
TTL_S = 2.0
HOLDER = Path(__file__).with_name("_dead_holder.py")


@pytest.mark.timeout(120)
def test_a_killed_holder_gives_back_only_what_it_never_drew(
    db: Database, db_url: str, make_tenant: Callable[..., str],
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:  # fmt: skip
    make_tenant("acme", "1")
    proc = subprocess.Popen(
        [sys.executable, str(HOLDER), db_url, "acme", str(TTL_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        holder = json.loads(line)
        # Idle for 2.5 lifetimes, the lease was kept alive by the heartbeat alone, which
        # reported the call in flight; 30 cents of its $1 are drawn (20 delivered, 10 spooled).
        lease = sql(
            "SELECT status, expires_at > now(), spent_usd, inflight_usd, reserved_usd"
            " FROM cap_leases WHERE lease_id = %s", holder["lease_id"],
        )  # fmt: skip
        assert lease == [("open", True, D("0.3"), D("0.1"), D("0.7"))]
        proc.kill()
        proc.wait(10)
    finally:
        stop_process(proc)
    killed_at = time.monotonic()
    # Its successor delivers the spool: a reported call and one settled after its last report.
    Ingestor(db).ingest(validate_batch(holder["spool"]))

    # The holder drew 50 cents: 30 reported, 10 settled after its report, 10 in flight.
    drawn_by_holder = D("0.5")
    survivor = TenantBudget(
        PgLeaseTransport(LeaseStore(db, divisor=1)), "acme", holder="survivor",
        chunk_usd=D("0.05"), ttl_s=TTL_S, contention_wait_s=4 * TTL_S + 10,
    )  # fmt: skip
    spent = D(0)
    with pytest.raises(TenantCapReached):
        while True:
            survivor.reserve(D("0.05")).settle(D("0.05"))
            spent += D("0.05")
    waited = time.monotonic() - killed_at
    survivor.close()
    # The 50 cents the holder never drew, after at most two lifetimes of its lease (expired,
    # then the grace for its spool); nothing before, since the holder held the whole cap.
    assert spent == D("0.5")
    assert drawn_by_holder + spent <= D("1")
    assert waited <= 2 * TTL_S + 2.0, waited
    row = caps_row(sql, "acme")
    assert (row["reserved"], row["spend"]) == (0, D("1"))
    assert sql("SELECT status FROM cap_leases WHERE lease_id = %s", holder["lease_id"]) == [
        ("expired",)
    ]
