"""A worker process for the cap race: N threads, each a run drawing from its own lease.

Each simulated model call reserves an upper-bound estimate, "happens" (its cost is drawn
below the estimate), settles, and posts its event to the ledger naming the lease. A call
exists for the provider's bill only once its event is stored, so a killed process's
in-flight draws cost nothing. Prints one JSON line per thread when done.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import requests

from runledger.cost.lease import BudgetBusy, HttpLeaseTransport, TenantBudget, TenantCapReached


def run_thread(url: str, token: str, tenant: str, name: str, ttl: float, seed: int,
               out: list[dict]) -> None:  # fmt: skip
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    budget = TenantBudget(
        HttpLeaseTransport(url, token), tenant, holder=name, chunk_usd=Decimal("0.05"),
        ttl_s=ttl, contention_wait_s=60,
    )  # fmt: skip
    spent, calls, stopped = Decimal(0), 0, "running"
    try:
        while True:
            estimate = Decimal(rng.randint(500, 3000)) / Decimal(1_000_000)
            try:
                res = budget.reserve(estimate)
            except TenantCapReached:
                stopped = "cap"
                break
            except BudgetBusy:
                stopped = "busy"
                break
            actual = (estimate * Decimal(rng.randint(50, 100)) / 100).quantize(Decimal("1e-9"))
            lease_id = res.settle(actual)
            ev = {
                "event_id": str(uuid.uuid4()), "type": "external_call", "tenant_id": tenant,
                "project_id": "race", "run_id": name, "phase": "build", "role": "implementer",
                "occurred_at": datetime.now(UTC).isoformat(), "cost_usd": str(actual),
                "payload": {"service": "model.simulated", "summary": "call",
                            "lease_id": lease_id},
            }  # fmt: skip
            resp = session.post(f"{url}/v1/events", json={"events": [ev]}, timeout=30)
            resp.raise_for_status()
            assert resp.json()["accepted"] == 1, resp.text
            spent += actual
            calls += 1
        budget.close()
    except Exception as exc:  # report, do not hide: the test asserts on it
        stopped = f"error: {type(exc).__name__}: {exc}"
    out.append({"name": name, "spent": str(spent), "calls": calls, "stopped": stopped})


def main() -> None:
    url, token, tenant, threads, ttl, seed = sys.argv[1:7]
    out: list[dict] = []
    workers = [
        threading.Thread(
            target=run_thread,
            args=(url, token, tenant, f"p{seed}-t{i}", float(ttl), int(seed) * 1000 + i, out),
        )
        for i in range(int(threads))
    ]
    for w in workers:
        w.start()
    print("started", flush=True)
    for w in workers:
        w.join()
    for item in out:
        print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
