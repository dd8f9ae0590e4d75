"""Scrape cost of the exporter at 200 tenants x 5 models x 10 phases vs plain prometheus-client.

A real PostgreSQL is filled with a realistic pipeline day (every tenant runs every phase
with every model; retries, failures, validation rejections, overrides, cap hits, proofs,
microsites, demos), the exporter tails all of it and refreshes its ledger gauges in the
background, and ``/metrics`` is fetched over HTTP the way Prometheus does (OpenMetrics
Accept header, gzip). The baseline, in the same run and process, is prometheus-client's own
exposition of a registry holding the same number of series, served by the same HTTP server.
Writes bench/results/scrape.json with exporter_ms, baseline_ms, series and ratio (target
<= 1.3).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import requests
from prometheus_client import (
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    start_http_server,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, postgres, write_result

from runledger.events import validate_batch
from runledger.exporter import Exporter, load_config
from runledger.store import Database, Ingestor
from runledger.store.tenants import create_tenant

TENANTS, MODELS, PHASES = 200, 5, 10
ROLES = ("coordinator", "implementer", "validator", "publisher")
PLAYBOOKS = ("web", "launch", "docs")
SCRAPES = 15
BATCH = 1000
# What Prometheus 2.42 sends when exemplar storage is on.
HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def _events(now: datetime) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    out: list[dict[str, Any]] = []
    t0 = now - timedelta(hours=4)

    def add(type_: str, at: datetime, **fields: Any) -> None:
        out.append({"event_id": str(uuid.uuid4()), "type": type_,
                    "occurred_at": at.isoformat(), **fields})  # fmt: skip

    for t in range(TENANTS):
        tenant = f"tenant-{t:03d}"
        playbook = PLAYBOOKS[t % len(PLAYBOOKS)]
        project = f"{tenant}-proj"
        base = {"tenant_id": tenant, "project_id": project, "playbook": playbook}
        at = t0 + timedelta(seconds=t)
        for p in range(PHASES):
            phase, role = f"phase-{p}", ROLES[p % len(ROLES)]
            scope = {**base, "phase": phase, "role": role}
            add("phase_entered", at, run_id=f"{project}-{phase}", **scope)
            for m in range(MODELS):
                run = f"{project}-{phase}-m{m}"
                trace = uuid.uuid4().hex
                common = {**scope, "run_id": run, "trace_id": trace}
                attempt = 2 if rnd.random() < 0.1 else 1
                add("run_queued", at + timedelta(seconds=1), attempt=attempt, **common)
                add("run_started", at + timedelta(seconds=1 + rnd.randint(0, 90)),
                    attempt=attempt, **common)  # fmt: skip
                add("artifact_written", at + timedelta(seconds=100), model=f"model-{m}",
                    tokens_in=rnd.randint(500, 20000), tokens_out=rnd.randint(100, 4000),
                    cost_usd=str(Decimal(rnd.randint(100, 90000)) / 1_000_000),
                    cached=rnd.random() < 0.2, artifact_path=f"{phase}.md",
                    artifact_version=m + 1, **common)  # fmt: skip
                if rnd.random() < 0.1:
                    add("validation_failed", at + timedelta(seconds=110),
                        payload={"reason": "structure drift"}, **common)  # fmt: skip
                if rnd.random() < 0.05:
                    add("user_override", at + timedelta(seconds=115),
                        payload={"action": "approved"}, **common)  # fmt: skip
                end = at + timedelta(seconds=120 + m)
                roll = rnd.random()
                if roll < 0.08:
                    add("run_failed", end, payload={"reason": "model error"}, **common)
                elif roll < 0.12:
                    add("cap_hit", end, payload={"cap": "tokens", "limit": "1", "spent": "2"},
                        **common)  # fmt: skip
                    add("run_finished", end, payload={"status": "partial"}, **common)
                else:
                    add("run_finished", end, **common)
            add("phase_advanced", at + timedelta(seconds=200 + rnd.randint(0, 7200)),
                run_id=f"{project}-{phase}", payload={"to_phase": f"phase-{p + 1}"},
                **scope)  # fmt: skip
        edge = {**base, "phase": "phase-9", "role": "publisher", "run_id": f"{project}-pub"}
        add("publish_done", at + timedelta(hours=1), artifact_path="site", artifact_version=1,
            **edge)  # fmt: skip
        add(
            "proof_requested",
            at + timedelta(hours=1),
            payload={"proof_id": f"{project}-proof", "due_at": now.isoformat()},
            **edge,
        )
        add("microsite_visit", at + timedelta(hours=1), payload={"microsite_id": "m"}, **edge)
        add("microsite_conversion", at + timedelta(hours=1), payload={"microsite_id": "m"},
            **edge)  # fmt: skip
        add("demo_started", at + timedelta(hours=1), payload={"demo_id": "d"}, **edge)
        add("demo_completed", at + timedelta(hours=1), payload={"demo_id": "d"}, **edge)
    return out


def _scrape_ms(url: str) -> float:
    started = time.perf_counter()
    resp = requests.get(url, headers=HEADERS, timeout=60)
    resp.raise_for_status()
    assert resp.content
    return (time.perf_counter() - started) * 1000


def _series(url: str) -> int:
    text = requests.get(url, timeout=60).text  # classic text format: one line per series
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> None:
    disable_created_metrics()  # as `runledger exporter` does; applies to both sides
    with postgres() as server:
        url = fresh_database(server, "rl_bench_scrape")
        with psycopg.connect(url) as conn:
            for t in range(TENANTS):
                create_tenant(conn, f"tenant-{t:03d}", daily_cap_usd=Decimal(50))
        db = Database(url, max_size=4).open(wait=True)
        now = datetime.now(UTC)
        raw = _events(now)
        started = time.perf_counter()
        ingestor = Ingestor(db)
        for i in range(0, len(raw), BATCH):
            models = validate_batch(raw[i : i + BATCH])
            bad = [m for m in models if isinstance(m, list)]
            assert not bad, bad[:3]
            results = ingestor.ingest(models)  # type: ignore[arg-type]
            refused = [r for r in results if r.status != "accepted"]
            assert not refused, refused[:3]
        print(f"ingested {len(raw)} events in {time.perf_counter() - started:.1f}s", flush=True)

        config = load_config().with_overrides(start_at="beginning")
        exporter = Exporter(db, config, registry=CollectorRegistry())
        started = time.perf_counter()
        while exporter.tailer.processed < len(raw):
            if not exporter.run_once():
                raise RuntimeError("the exporter could not read the ledger")
        print(f"exporter tailed {exporter.tailer.processed} events in "
              f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
        exporter.start()  # the background loop keeps polling while we scrape, as in production
        port = exporter.serve(0)
        exporter_url = f"http://127.0.0.1:{port}/metrics"
        series = _series(exporter_url)

        baseline_registry = CollectorRegistry()
        counter = Counter("bench_baseline", "Baseline series.", ["tenant", "model", "phase"],
                          registry=baseline_registry)  # fmt: skip
        for i in range(series):
            counter.labels(f"tenant-{i % TENANTS:03d}", f"model-{i // TENANTS % MODELS}",
                           f"phase-{i // (TENANTS * MODELS)}").inc(i)  # fmt: skip
        baseline_server, _ = start_http_server(0, addr="127.0.0.1", registry=baseline_registry)
        baseline_url = f"http://127.0.0.1:{baseline_server.server_port}/metrics"
        assert _series(baseline_url) == series

        exporter_ms, baseline_ms = [], []
        for _ in range(SCRAPES):  # interleaved, so drift hits both sides alike
            exporter_ms.append(_scrape_ms(exporter_url))
            baseline_ms.append(_scrape_ms(baseline_url))
        exporter.stop()
        baseline_server.shutdown()
        baseline_server.server_close()
        db.close()

    figures = {
        "exporter_ms": round(statistics.median(exporter_ms), 1),
        "baseline_ms": round(statistics.median(baseline_ms), 1),
        "series": series,
        "events": len(raw),
        "tenants": TENANTS,
        "models": MODELS,
        "phases": PHASES,
        "scrapes": SCRAPES,
    }
    figures["ratio"] = round(figures["exporter_ms"] / figures["baseline_ms"], 3)
    print(f"exporter scrape: {figures['exporter_ms']} ms median over {SCRAPES}")
    print(f"prometheus-client baseline, same {series} series: {figures['baseline_ms']} ms")
    print(f"ratio: {figures['ratio']} (target <= 1.3)")
    path = write_result("scrape", figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
