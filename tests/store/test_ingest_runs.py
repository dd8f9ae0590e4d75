"""A run's row after one batch equals what its events say, computed here in plain Python.

ingest_apply_runs (migration 0008) finds each run's latest status, failure reason, model and
artifact with ordered aggregates over one sort; this is the rule it must keep, property-based
over batches with ties in time (the batch order then decides).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support import event
from runledger.events import validate_batch
from runledger.store import Database, Ingestor

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
RANK = {"run_queued": 0, "run_started": 1, "run_finished": 2, "run_failed": 2}


@st.composite
def raw_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(
        ["run_queued", "run_started", "run_finished", "run_failed", "artifact_written",
         "external_call"]
    ))  # fmt: skip
    fields: dict[str, Any] = {
        "run_id": draw(st.sampled_from(["a", "b", "c"])),
        "occurred_at": (BASE + timedelta(seconds=draw(st.integers(0, 3)))).isoformat(),
        "tokens_in": draw(st.integers(0, 50)),
        "cost_usd": str(draw(st.integers(0, 300)) / 100),
    }
    if draw(st.booleans()):
        fields["model"] = draw(st.sampled_from(["gpt-4o", "claude-haiku-4", "gemini-2.5-flash"]))
    if kind == "artifact_written" or draw(st.integers(0, 3)) == 0:
        fields["artifact_path"] = draw(st.sampled_from(["site/a.html", "site/b.html"]))
        fields["artifact_version"] = draw(st.integers(1, 4))
    if kind == "run_queued":
        fields["attempt"] = draw(st.integers(1, 3))
    elif kind == "run_finished" and draw(st.booleans()):
        fields["payload"] = {"status": draw(st.sampled_from(["succeeded", "partial"]))}
    elif kind == "run_failed":
        fields["payload"] = {"reason": draw(st.sampled_from(["timeout", "bad output"]))}
    elif kind == "external_call":
        fields["payload"] = {"service": "maps-api", "summary": "geocode"}
    return event(kind, **fields)


Timed = list[tuple[datetime, int, dict[str, Any]]]
"""A run's events with their times and places in the batch."""


def _latest(mine: Timed, keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The run's latest event that ``keep`` selects; ties in time go to the later one sent."""
    found = [(at, i, e) for at, i, e in mine if keep(e)]
    return max(found, key=lambda f: (f[0], f[1]))[2] if found else None


def _times(mine: Timed, kinds: set[str]) -> list[datetime]:
    return [at for at, _, e in mine if e["type"] in kinds]


def _status(mine: Timed) -> tuple[str, datetime]:
    """The highest-ranked status event wins, then the latest, then the later one sent."""
    ranked = [(RANK[e["type"]], at, i, e) for at, i, e in mine if e["type"] in RANK]
    if not ranked:
        return "running", min(at for at, _, _ in mine)
    _, at, _, last = max(ranked, key=lambda r: (r[0], r[1], r[2]))
    named = {"run_queued": "queued", "run_started": "running", "run_failed": "failed"}
    return named.get(last["type"]) or last.get("payload", {}).get("status", "succeeded"), at


def expected_runs(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each run's row as the documented rules say, computed from the raw events."""
    runs: dict[str, dict[str, Any]] = {}
    for run_id in {e["run_id"] for e in events}:
        mine = [(datetime.fromisoformat(e["occurred_at"]), i, e) for i, e in enumerate(events)
                if e["run_id"] == run_id]  # fmt: skip
        status, status_at = _status(mine)
        failed = _latest(mine, lambda e: e["type"] == "run_failed")
        model = _latest(mine, lambda e: "model" in e)
        artifact = _latest(mine, lambda e: "artifact_path" in e)
        queued = [e.get("attempt", 1) for _, _, e in mine if e["type"] == "run_queued"]
        runs[run_id] = {
            "status": status,
            "status_at": status_at,
            "queued_at": min(_times(mine, {"run_queued"}), default=None),
            "started_at": min(_times(mine, {"run_started"}), default=None),
            "finished_at": max(_times(mine, {"run_finished", "run_failed"}), default=None),
            "attempt": max(queued, default=1),
            "tokens_in": sum(e["tokens_in"] for _, _, e in mine),
            "cost_usd": sum(Decimal(e["cost_usd"]) for _, _, e in mine),
            "error": failed["payload"]["reason"] if failed else None,
            "model": model["model"] if model else None,
            "artifact": (artifact["artifact_path"], artifact["artifact_version"])
            if artifact
            else (None, None),
        }
    return runs


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(raw_event(), min_size=1, max_size=25))
def test_a_runs_row_is_what_its_events_say(
    db: Database,
    make_tenant: Callable[..., str],
    sql: Callable[..., list[tuple[Any, ...]]],
    batch: list[dict[str, Any]],
) -> None:
    if not sql("SELECT 1 FROM tenants WHERE tenant_id = 'acme'"):
        make_tenant("acme")
    prefix = uuid.uuid4().hex[:8]  # runs of earlier examples stay in this database
    for e in batch:
        e["run_id"] = f"{prefix}-{e['run_id']}"
    models = validate_batch(batch)
    assert all(not isinstance(m, list) for m in models), models
    results = Ingestor(db).ingest(models)
    assert {r.status for r in results} == {"accepted"}

    rows = sql(
        "SELECT run_id, status, status_at, queued_at, started_at, finished_at, attempt,"
        " tokens_in, cost_usd, error, model, artifact_path, artifact_version FROM runs"
        " WHERE run_id LIKE %s",
        f"{prefix}-%",
    )
    got = {
        r[0]: {
            "status": r[1], "status_at": r[2], "queued_at": r[3], "started_at": r[4],
            "finished_at": r[5], "attempt": r[6], "tokens_in": r[7], "cost_usd": r[8],
            "error": r[9], "model": r[10], "artifact": (r[11], r[12]),
        }
        for r in rows
    }  # fmt: skip
    assert got == expected_runs(batch)
