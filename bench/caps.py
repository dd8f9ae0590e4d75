"""Cap check on the agent hot path vs one bare ``UPDATE ... RETURNING`` round trip.

The hot path is what an agent pays per model call to stay under its tenant's daily cap:
reserve the call's estimate from its budget lease and settle the actual cost, through a
``TenantBudget`` talking to the real control service (gunicorn) only when the lease runs
low. The baseline is one bare ``UPDATE caps ... RETURNING`` round trip to the same
PostgreSQL in the same run: what a per-call atomic check would cost at the very least.
Then several processes race their runs on one tenant's cap to measure settled
reservations per second and check that nothing was overspent.
Writes bench/results/caps.json.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import control_service, fresh_database, postgres, write_result

from runledger.cost.lease import HttpLeaseTransport, TenantBudget, TenantCapReached
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

HOT_CALLS = 20_000
BARE_UPDATES = 2_000
RACE_PROCESSES = 4
RACE_THREADS = 8
RACE_CAP = Decimal("20")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hot_path(url: str, token: str) -> tuple[list[float], int]:
    """Time reserve + settle for each call of one run drawing from its lease."""
    rng = random.Random(1)
    budget = TenantBudget(HttpLeaseTransport(url, token), "hot", holder="bench-hot",
                          chunk_usd=Decimal("0.50"))  # fmt: skip
    estimates = [Decimal(rng.randint(500, 3000)) / Decimal(1_000_000) for _ in range(HOT_CALLS)]
    timings = []
    for est in estimates:
        t0 = time.perf_counter_ns()
        res = budget.reserve(est)
        res.settle(est)
        timings.append((time.perf_counter_ns() - t0) / 1000)
    budget.close()
    return timings, budget.round_trips


def bare_update(db_url: str) -> list[float]:
    """Time one autocommitted ``UPDATE ... RETURNING`` on the caps row."""
    today = datetime.now(UTC).date()
    timings = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO caps (tenant_id, date, daily_cap_usd) VALUES ('bare', %s, 1000)"
            " ON CONFLICT DO NOTHING", (today,),
        )  # fmt: skip
        for _ in range(BARE_UPDATES):
            t0 = time.perf_counter_ns()
            conn.execute(
                "UPDATE caps SET reserved_usd = reserved_usd + 0.000001"
                " WHERE tenant_id = 'bare' AND date = %s"
                " AND settled_usd + reserved_usd + 0.000001 <= daily_cap_usd"
                " RETURNING reserved_usd",
                (today,),
            ).fetchone()
            timings.append((time.perf_counter_ns() - t0) / 1000)
    return timings


def race_process(url: str, token: str, seed: int, out: Any) -> None:
    """Run RACE_THREADS runs that draw until the cap; report calls and spend."""
    results: list[tuple[int, Decimal]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        budget = TenantBudget(HttpLeaseTransport(url, token), "race", holder=f"r{seed}-{i}",
                              chunk_usd=Decimal("0.25"), contention_wait_s=60)  # fmt: skip
        calls, spent = 0, Decimal(0)
        while True:
            est = Decimal(rng.randint(500, 3000)) / Decimal(1_000_000)
            try:
                res = budget.reserve(est)
            except TenantCapReached:
                break
            actual = (est * Decimal(rng.randint(50, 100)) / 100).quantize(Decimal("1e-9"))
            res.settle(actual)
            calls += 1
            spent += actual
        budget.close()
        with lock:
            results.append((calls, spent))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACE_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(c for c, _ in results), str(sum((s for _, s in results), Decimal(0)))))


def main() -> None:
    with postgres() as server:
        db_url = fresh_database(server, "bench_caps")
        with psycopg.connect(db_url) as conn:
            for tenant, cap in (("hot", Decimal(10_000)), ("race", RACE_CAP),
                                ("bare", Decimal(1000))):  # fmt: skip
                create_tenant(conn, tenant, daily_cap_usd=cap)
            hot_token = create_token(conn, role="agent", label="bench", tenant_id="hot")
            race_token = create_token(conn, role="agent", label="bench", tenant_id="race")
        with control_service(db_url, workers=2, threads=4) as url:
            bare = bare_update(db_url)
            hot, round_trips = hot_path(url, hot_token)
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            procs = [ctx.Process(target=race_process, args=(url, race_token, s, queue))
                     for s in range(RACE_PROCESSES)]  # fmt: skip
            t0 = time.perf_counter()
            for p in procs:
                p.start()
            reports = [queue.get(timeout=300) for _ in procs]
            for p in procs:
                p.join(30)
            elapsed = time.perf_counter() - t0
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT settled_usd, reserved_usd FROM caps WHERE tenant_id = 'race'"
            ).fetchone()
    assert row is not None
    settled, reserved = row
    calls = sum(c for c, _ in reports)
    client_spent = sum((Decimal(s) for _, s in reports), Decimal(0))
    figures = {
        "check_p50_us": round(statistics.median(hot), 2),
        "check_p99_us": round(percentile(hot, 0.99), 2),
        "check_p999_us": round(percentile(hot, 0.999), 2),
        "hot_calls": HOT_CALLS,
        "hot_round_trips": round_trips,
        "bare_update_p50_us": round(statistics.median(bare), 2),
        "bare_update_p99_us": round(percentile(bare, 0.99), 2),
        "reservations_per_s": round(calls / elapsed, 1),
        "race_processes": RACE_PROCESSES,
        "race_runs": RACE_PROCESSES * RACE_THREADS,
        "race_cap_usd": str(RACE_CAP),
        "race_settled_usd": str(settled),
        "race_cap_used": float(settled / RACE_CAP),
        "race_leftover_reserved_usd": str(reserved),
        "race_client_matches_ledger": client_spent == settled,
        "overspend_usd": float(max(settled - RACE_CAP, Decimal(0))),
    }
    figures["ratio_p50"] = round(figures["check_p50_us"] / figures["bare_update_p50_us"], 4)
    path = write_result("caps", figures)
    print(
        f"cap check per model call: p50 {figures['check_p50_us']} us, "
        f"p99 {figures['check_p99_us']} us ({round_trips} round trips for {HOT_CALLS} calls)"
    )
    print(f"bare UPDATE ... RETURNING: p50 {figures['bare_update_p50_us']} us")
    print(f"ratio_p50 {figures['ratio_p50']}")
    print(
        f"race: {calls} settled reservations in {elapsed:.1f}s = "
        f"{figures['reservations_per_s']}/s across {RACE_PROCESSES} processes; settled "
        f"${settled} of ${RACE_CAP} ({figures['race_cap_used']:.2%}), overspend "
        f"${figures['overspend_usd']}, client == ledger: {figures['race_client_matches_ledger']}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
