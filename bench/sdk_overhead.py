"""What ``run.model_call`` adds to an agent's model call, against a bare OpenTelemetry span.

Both sides run in the same process on the same tracer provider (a BatchSpanProcessor with a
no-op exporter, so export work happens as it would in production). The SDK side includes the
span, the GenAI and runledger attributes, cost accounting from the pricing table and the
spool write of the run's usage, with the sender thread running against a real control
service and PostgreSQL. The bare side is ``start_as_current_span`` with the same attributes.
Batches of the two alternate so drift (CPU frequency, other load) hits both alike.

A second SDK measurement points the ledger at a loopback port where nothing listens: the
sender keeps failing and backing off, and the call latency must not change.

The first two ledgers turn the tenant cap off (``CostOptions(enforce_tenant_cap=False)``).
A separate phase, after those, runs with the default, the tenant's daily cap enforced, and
alternates with bare spans again: each call is checked against the run's budget lease and
settled on it (an upper-bound estimate from ``prompt_tokens`` and ``max_tokens``), with the
round trips to the real control service that drawing from a lease needs (one lease per run
of ``CAPPED_CALLS_PER_RUN`` calls, opened at its first call, topped up in the background).

Writes bench/results/sdk_overhead.json with sdk_call_us, bare_span_us, ratio,
sdk_call_unreachable_us and sdk_call_capped_us (medians of per-batch means, microseconds per
call). Both ``ratio`` (cap off) and ``capped_ratio`` (cap on) must stay within the target.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from _common import control_service, fresh_database, free_port, postgres, write_result
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from runledger.sdk import CostOptions, DeliveryOptions, Ledger, TelemetryOptions
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

BATCH = 200
ROUNDS = 40
CALLS_PER_RUN = 50
CAPPED_CALLS_PER_RUN = 1000
TARGET_RATIO = 2.0


class NoopExporter(SpanExporter):
    """Accept spans and drop them: exporting costs nothing, batching still runs."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _sdk_batch(ledger: Ledger, state: dict[str, Any], *, estimate: bool = False) -> float:
    run = state.get("run")
    per_run = CAPPED_CALLS_PER_RUN if estimate else CALLS_PER_RUN
    t0 = time.perf_counter()
    for _ in range(BATCH):
        if run is None or state["calls"] >= per_run:
            t_pause = time.perf_counter()
            if run is not None:
                run.finish()
            run = state["run"] = ledger.start_run("bench", "proj-1", "build", "implementer")
            state["calls"] = 0
            t0 += time.perf_counter() - t_pause  # run boundaries are not part of a call
        bounds = {"prompt_tokens": 1200, "max_tokens": 400} if estimate else {}
        with run.model_call("gpt-4.1", provider="openai", **bounds) as call:
            call.record(tokens_in=1200, tokens_out=300, cached_tokens_in=200)
        state["calls"] += 1
    return (time.perf_counter() - t0) / BATCH * 1e6


def _bare_batch(provider: TracerProvider, state: dict[str, Any]) -> float:
    tracer = provider.get_tracer("bench.bare")
    attrs = {
        "runledger.tenant_id": "bench", "runledger.project_id": "proj-1",
        "runledger.phase": "build", "runledger.role": "implementer",
        "runledger.run_id": "run-bench", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4.1", "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
    }  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(BATCH):
        with tracer.start_as_current_span(
            "chat gpt-4.1", kind=SpanKind.CLIENT, attributes=attrs
        ) as span:
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 300,
                    "gen_ai.usage.cache_read.input_tokens": 200,
                    "runledger.cached": False,
                    "runledger.cost_usd": 0.0033,
                }
            )
    return (time.perf_counter() - t0) / BATCH * 1e6


def _measure(pairs: list[tuple[str, Callable[[], float]]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name, _ in pairs}
    for _ in range(3):  # warm up
        for _, fn in pairs:
            fn()
    for _ in range(ROUNDS):
        for name, fn in pairs:
            samples[name].append(fn())
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    tmp = Path(tempfile.mkdtemp(prefix="rl-bench-sdk-"))
    with postgres() as server:
        url = fresh_database(server, "bench_sdk")
        with psycopg.connect(url) as conn:
            create_tenant(conn, "bench", daily_cap_usd=10**9)
            token = create_token(conn, role="agent", label="bench", tenant_id="bench")
        with control_service(url) as base:
            common: dict[str, Any] = {
                "telemetry": TelemetryOptions(tracer_provider=provider),
                "environ": {},
            }
            uncapped = CostOptions(enforce_tenant_cap=False)
            live = Ledger(
                base, token, delivery=DeliveryOptions(tmp / "live.db"), costs=uncapped, **common
            )
            dead = Ledger(
                f"http://127.0.0.1:{free_port()}",
                token,
                delivery=DeliveryOptions(tmp / "dead.db"),
                costs=uncapped,
                **common,
            )
            live_state: dict[str, Any] = {}
            dead_state: dict[str, Any] = {}
            result = _measure(
                [
                    ("sdk", lambda: _sdk_batch(live, live_state)),
                    ("bare", lambda: _bare_batch(provider, {})),
                    ("unreachable", lambda: _sdk_batch(dead, dead_state)),
                ]
            )
            live_state["run"].finish()
            dead_state["run"].finish()
            delivered = live.flush(30)
            live.close()
            dead.close(timeout=0.5)
            capped = Ledger(base, token, delivery=DeliveryOptions(tmp / "capped.db"), **common)
            capped_state: dict[str, Any] = {}
            result.update(
                _measure(
                    [
                        ("capped", lambda: _sdk_batch(capped, capped_state, estimate=True)),
                        ("capped_bare", lambda: _bare_batch(provider, {})),
                    ]
                )
            )
            capped_state["run"].finish()
            delivered = capped.flush(30) and delivered
            capped.close()
            with psycopg.connect(url) as conn:
                stored = conn.execute("SELECT count(*) FROM events").fetchone()
                leases = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE status = 'open') FROM cap_leases"
                ).fetchone()
    provider.shutdown()
    figures = {
        "sdk_call_us": round(result["sdk"], 2),
        "bare_span_us": round(result["bare"], 2),
        "ratio": round(result["sdk"] / result["bare"], 3),
        "sdk_call_unreachable_us": round(result["unreachable"], 2),
        "unreachable_ratio": round(result["unreachable"] / result["sdk"], 3),
        "sdk_call_capped_us": round(result["capped"], 2),
        "capped_ratio": round(result["capped"] / result["capped_bare"], 3),
        "capped_leases": int(leases[0]) if leases else 0,
        "capped_leases_left_open": int(leases[1]) if leases else 0,
        "calls_per_batch": BATCH,
        "batches": ROUNDS,
        "target_ratio": TARGET_RATIO,
        "events_delivered": int(stored[0]) if stored else 0,
    }
    path = write_result("sdk_overhead", figures)
    print(f"sdk model_call {figures['sdk_call_us']} us, bare span {figures['bare_span_us']} us, "
          f"ratio {figures['ratio']} (target <= {TARGET_RATIO}); ledger unreachable "
          f"{figures['sdk_call_unreachable_us']} us; tenant cap enforced "
          f"{figures['sdk_call_capped_us']} us, capped_ratio {figures['capped_ratio']} "
          f"(target <= {TARGET_RATIO}) -> {path}")  # fmt: skip
    if not delivered:
        print("events were not all delivered to the live ledger", file=sys.stderr)
        return 1
    return 0 if max(figures["ratio"], figures["capped_ratio"]) <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
