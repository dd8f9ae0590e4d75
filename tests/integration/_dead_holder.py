"""A lease holder that spends, reports, keeps a call in flight, and waits to be killed.

It draws from its own budget lease (straight to PostgreSQL), delivers the events of two calls
and spools a third, starts a fourth call that never ends, stays idle for a few lifetimes of
its lease (only the heartbeat renews it), reports, then settles a fifth call without
reporting it and spools its event. Prints one JSON line (lease id, spool) and sleeps.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from runledger.cost.lease import PgLeaseTransport, TenantBudget
from runledger.events import validate_batch
from runledger.store import Database, Ingestor, LeaseStore

CALL = Decimal("0.1")


def event(tenant: str, lease_id: str | None) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": "external_call", "tenant_id": tenant,
        "project_id": "doomed", "run_id": "doomed", "phase": "build", "role": "implementer",
        "occurred_at": datetime.now(UTC).isoformat(), "cost_usd": str(CALL),
        "payload": {"service": "model.simulated", "summary": "call", "lease_id": lease_id},
    }  # fmt: skip


def main() -> None:
    url, tenant, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    db = Database(url, max_size=2).open(wait=True)
    budget = TenantBudget(
        # Whole chunks (divisor 1): the holder holds the whole $1 cap, and its five 10-cent
        # calls never take the lease below the background top-up's threshold (40% of it).
        PgLeaseTransport(LeaseStore(db, divisor=1)), tenant, holder="doomed",
        chunk_usd=Decimal("1"), ttl_s=ttl,
    )  # fmt: skip
    events = [event(tenant, budget.reserve(CALL).settle(CALL)) for _ in range(3)]
    Ingestor(db).ingest(validate_batch(events[:2]))
    budget.reserve(CALL)  # a call in flight when the holder dies: no event, ever
    time.sleep(2.5 * ttl)
    budget.flush()
    spool = [events[2], event(tenant, budget.reserve(CALL).settle(CALL))]
    print(json.dumps({"lease_id": budget.lease_id, "spool": spool}), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
