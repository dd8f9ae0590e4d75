"""What quality checks cost on the hot paths: storing artifact contents, and the Publisher's
freeze check.

1. **Snapshots**: ``POST /v1/artifacts`` of the demo's pages (about 1 KB each, 100 per
   request; the control service redacts each, computes its structure features and inserts
   it) against ``POST /v1/prompt-audit`` of the same texts as prompts (redacted and inserted,
   no features): the existing path of the same shape. ``snapshot_ratio`` is the artifacts'
   time per record over the prompt audit's (1.0: features cost nothing).
2. **Freeze check**: a Publisher run's full ``publish_done`` (asks
   ``GET /v1/playbooks/<p>/freeze`` first) against a partial one (never checks), in the same
   Ledger against the same control service. ``publish_ratio`` is the full publish's time over
   the partial's; ``freeze_check_ms`` the difference per publish.

Rounds of each pair alternate. Writes bench/results/quality.json.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import control_service, fresh_database, postgres, write_result

from runledger.demo.validator import render_site
from runledger.sdk import CostOptions, DeliveryOptions, Ledger, TelemetryOptions
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

ROUNDS = 7
RECORDS = 100
PUBLISHES = 100


def _snapshots(pages: list[str]) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "records": [
            {"snapshot_id": str(uuid.uuid4()), "tenant_id": "acme",
             "project_id": f"p-{uuid.uuid4().hex[:12]}", "run_id": "r1",
             "playbook": "local-business", "phase": "build", "role": "implementer",
             "artifact_path": "site/index.html", "artifact_version": 1, "content": page,
             "created_at": now}
            for page in pages
        ]
    }  # fmt: skip


def _prompts(pages: list[str]) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "records": [
            {"audit_id": uuid.uuid4().hex, "tenant_id": "acme", "run_id": f"r-{i}",
             "prompt": page, "created_at": now}
            for i, page in enumerate(pages)
        ]
    }  # fmt: skip


def main() -> int:
    rng = random.Random(7)
    with postgres() as server:
        url = fresh_database(server, "bench_quality")
        with psycopg.connect(url) as conn:
            create_tenant(conn, "acme", daily_cap_usd=100)  # type: ignore[arg-type]
            token = create_token(conn, role="agent", label="bench", tenant_id="acme")
        auth = {"Authorization": f"Bearer {token}"}
        with control_service(url) as base:
            session = requests.Session()
            snap_ms, audit_ms = [], []
            for _ in range(ROUNDS):
                pages = [render_site("local-business", "Acme", rng) for _ in range(RECORDS)]
                for path, body, out in (
                    ("/v1/artifacts", _snapshots(pages), snap_ms),
                    ("/v1/prompt-audit", _prompts(pages), audit_ms),
                ):
                    start = time.perf_counter()
                    resp = session.post(base + path, json=body, headers=auth, timeout=30)
                    out.append((time.perf_counter() - start) * 1000 / RECORDS)
                    assert resp.status_code == 200 and resp.json()["accepted"] == RECORDS
            with tempfile.TemporaryDirectory() as spool:
                ledger = Ledger(
                    base, token, environ={"OTEL_SDK_DISABLED": "true"},
                    costs=CostOptions(enforce_tenant_cap=False),
                    delivery=DeliveryOptions(spool_path=Path(spool) / "events.db"),
                    telemetry=TelemetryOptions(capture_logging=False),
                )  # fmt: skip
                full_ms, partial_ms = [], []
                with ledger.run("acme", "p1", "publish", "publisher", playbook="pb") as run:
                    for _ in range(ROUNDS):
                        for partial, out in ((False, full_ms), (True, partial_ms)):
                            start = time.perf_counter()
                            for v in range(PUBLISHES):
                                run.publish_done("site/index.html", v + 1, partial=partial)
                            out.append((time.perf_counter() - start) * 1000 / PUBLISHES)
                ledger.close(timeout=30)
    figures = {
        "snapshot_ms": round(statistics.median(snap_ms), 3),
        "prompt_audit_ms": round(statistics.median(audit_ms), 3),
        "snapshot_ratio": round(
            statistics.median(s / a for s, a in zip(snap_ms, audit_ms, strict=True)), 3
        ),
        "publish_full_ms": round(statistics.median(full_ms), 3),
        "publish_partial_ms": round(statistics.median(partial_ms), 3),
        "publish_ratio": round(
            statistics.median(f / p for f, p in zip(full_ms, partial_ms, strict=True)), 3
        ),
        "freeze_check_ms": round(statistics.median(full_ms) - statistics.median(partial_ms), 3),
    }
    print(figures)
    write_result("quality", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
