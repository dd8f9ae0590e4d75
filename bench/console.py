"""Console benchmark: the admin overview's render time against a bare SELECT of the same
figures, and the CSV export's rows/s against a raw COPY ... TO STDOUT of the same rows.

The ledger holds 200 tenants and 1,000,000 events (half of them today, the rest over the
previous 29 days), about 200,000 runs, failures and projects, bulk-loaded with SQL (ingest
has its own benchmark). Both sides of each ratio run in this process on the same database.

Writes bench/results/console.json: ``render_p50_ms``, ``render_p95_ms``, ``select_p50_ms``,
``select_p95_ms``, ``ratio`` (render p50 / select p50; target <= 2), ``csv_rows_per_s``,
``copy_rows_per_s`` and ``csv_ratio`` (target >= 0.3).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exporter"))

import psycopg

from _common import fresh_database, postgres, write_result
from runledger.control import create_app
from runledger.store import Database
from runledger.store.console import Console, Filters
from runledger.store.partitions import create_partition
from runledger.store.tokens import create_token

TENANTS = 200
EVENTS = int(os.environ.get("BENCH_CONSOLE_EVENTS", "1000000"))
EVENTS_PER_RUN = 5
ROUNDS = int(os.environ.get("BENCH_CONSOLE_ROUNDS", "30"))


def load(url: str) -> None:
    """Bulk-load tenants, events, runs, failures, projects and today's caps rows."""
    today = datetime.now(UTC).date()
    runs = EVENTS // EVENTS_PER_RUN
    with psycopg.connect(url) as conn:
        for back in range(30):
            create_partition(conn, today - timedelta(days=back))
        conn.execute(
            "INSERT INTO tenants (tenant_id, display_name, daily_cap_usd)"
            " SELECT 't' || i, 'Tenant ' || i, 50 FROM generate_series(1, %s) i",
            (TENANTS,),
        )
        # Run r: tenant r % 200; half of the runs today, the others spread over 29 days.
        conn.execute(
            "INSERT INTO events (event_id, type, tenant_id, project_id, run_id, phase, role,"
            " playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, trace_id)"
            " SELECT gen_random_uuid(),"
            "  (ARRAY['run_started','model_call','model_call','artifact_written','run_finished'])"
            "   [1 + e %% 5],"
            "  't' || (r %% %(t)s + 1), 'p' || (r %% 5000), 'r' || r,"
            "  (ARRAY['brief','design','build','validate','publish'])[1 + r %% 5],"
            "  'implementer', 'landing',"
            "  CASE WHEN r %% 2 = 0 THEN %(now)s - make_interval(secs => (r %% 40000))"
            "       ELSE %(start)s - make_interval(secs => 1 + (r * 7919) %% (29 * 86400)) END,"
            "  CASE WHEN e %% 5 IN (1, 2) THEN 800 ELSE 0 END,"
            "  CASE WHEN e %% 5 IN (1, 2) THEN 200 ELSE 0 END,"
            "  CASE WHEN e %% 5 IN (1, 2) THEN 0.0012 ELSE 0 END,"
            "  CASE WHEN e %% 5 IN (1, 2) THEN (ARRAY['gpt-4.1','claude-sonnet-4','gemini-2.5'])"
            "   [1 + r %% 3] END, md5(r::text)"
            " FROM generate_series(0, %(runs)s - 1) r, generate_series(0, 4) e",
            {
                "t": TENANTS,
                "runs": runs,
                "now": datetime.now(UTC),
                "start": datetime.combine(today, datetime.min.time(), tzinfo=UTC),
            },
        )
        conn.execute(
            "INSERT INTO runs (run_id, tenant_id, project_id, phase, role, playbook, status,"
            " status_at, started_at, finished_at, tokens_in, tokens_out, cost_usd, model, trace_id)"
            " SELECT run_id, min(tenant_id), min(project_id), min(phase), 'implementer', 'landing',"
            "  CASE WHEN min(run_id) LIKE '%%7' THEN 'failed' ELSE 'succeeded' END,"
            "  max(occurred_at), min(occurred_at), max(occurred_at), sum(tokens_in),"
            "  sum(tokens_out), sum(cost_usd), max(model), min(trace_id)"
            " FROM events GROUP BY run_id"
        )
        conn.execute(
            "INSERT INTO failures (run_id, tenant_id, project_id, phase, role, kind, reason,"
            " trace_id, first_seen, last_seen)"
            " SELECT run_id, tenant_id, project_id, phase, role, 'run_failed', 'lint failed',"
            " trace_id, status_at, status_at FROM runs WHERE status = 'failed'"
        )
        conn.execute(
            "INSERT INTO projects (project_id, tenant_id, playbook, current_phase,"
            " phase_entered_at) SELECT project_id, min(tenant_id), 'landing', min(phase),"
            " min(started_at) FROM runs GROUP BY project_id"
        )
        conn.execute(
            "INSERT INTO caps (tenant_id, date, daily_cap_usd, spent_usd)"
            " SELECT tenant_id, %s, 50, sum(cost_usd) FROM events"
            " WHERE occurred_at >= %s GROUP BY tenant_id",
            (today, datetime.combine(today, datetime.min.time(), tzinfo=UTC)),
        )
        conn.execute("ANALYZE")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_select(db: Database, console: Console, rounds: int = 1) -> list[float]:
    """Time the overview's own queries, sent straight to PostgreSQL (no Flask, no template),
    on the same pool the app uses (so both sides have prepared statements alike)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with db.connection() as conn:
            now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            start = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
            p = {
                **Filters().params(),
                "day_start": start,
                "day_end": start + timedelta(days=1),
                "now": now,
            }
            console._overview_spend(conn, p)
            console._caps_near(conn, p)
            console._failures(conn, p)
            console._stuck(conn, p)
            conn.execute(
                "SELECT * FROM notifications WHERE resolved_at IS NULL AND dismissed_at IS NULL"
                " AND audience = 'admin' AND tenant_id IS NULL LIMIT 20"
            ).fetchall()
        times.append(time.perf_counter() - t0)
    return times


def render(client: object, rounds: int = 1) -> list[float]:
    """Time GET /admin end to end (session, queries, template) in the Flask app."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        resp = client.get("/admin")  # type: ignore[attr-defined]
        body = resp.get_data()
        times.append(time.perf_counter() - t0)
        assert resp.status_code == 200 and b"spend-by-tenant" in body
    return times


def csv_rate(app: object, token: str) -> tuple[float, int]:
    client = app.test_client()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    resp = client.get(
        "/v1/export/runs.csv", headers={"Authorization": f"Bearer {token}"}, buffered=False
    )
    rows = 0
    for chunk in resp.response:
        rows += chunk.count("\n") if isinstance(chunk, str) else chunk.count(b"\n")
    resp.close()
    return (rows - 1) / (time.perf_counter() - t0), rows - 1


def copy_rate(url: str) -> tuple[float, int]:
    with psycopg.connect(url) as conn, psycopg.ClientCursor(conn) as cur:
        params = Console.export_params(Console(None), Filters(), tokens=True)  # type: ignore[arg-type]
        sql = cur.mogrify(Console.EXPORT_QUERY, params)
        t0 = time.perf_counter()
        rows = 0
        cur.execute("SET TimeZone = 'UTC'")
        with cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy:
            for data in copy:
                rows += bytes(data).count(b"\n")
        return rows / (time.perf_counter() - t0), rows


def main() -> None:
    with postgres() as server:
        url = fresh_database(server, "bench_console")
        t0 = time.perf_counter()
        load(url)
        load_s = time.perf_counter() - t0
        print(f"loaded {EVENTS} events for {TENANTS} tenants in {load_s:.0f}s", flush=True)
        with psycopg.connect(url) as conn:
            admin = create_token(conn, role="admin", label="bench", tenant_id=None)
        db = Database(url, max_size=4).open(wait=True)
        try:
            app = create_app({"DATABASE": db})
            client = app.test_client()
            page = client.get("/login").get_data(as_text=True)
            csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            assert (
                client.post("/login", data={"token": admin, "csrf_token": csrf}).status_code == 303
            )
            console = Console(db)
            render(client, 3)  # warm: templates compiled, pool filled, plans prepared
            bare_select(db, console, 3)
            # Alternate the two sides round by round: load from other processes on the
            # machine then weighs on both alike.
            rendered, selected = [], []
            for _ in range(ROUNDS):
                rendered += render(client)
                selected += bare_select(db, console)
            csv_rates, copy_rates = [], []
            for _ in range(3):
                csv_per_s, csv_rows = csv_rate(app, admin)
                copy_per_s, copy_rows = copy_rate(url)
                csv_rates.append(csv_per_s)
                copy_rates.append(copy_per_s)
            csv_per_s, copy_per_s = statistics.median(csv_rates), statistics.median(copy_rates)
        finally:
            db.close()
    assert csv_rows == copy_rows, (csv_rows, copy_rows)
    figures = {
        "tenants": TENANTS,
        "events": EVENTS,
        "runs_exported": csv_rows,
        "rounds": ROUNDS,
        "load_s": round(load_s, 1),
        "render_p50_ms": round(statistics.median(rendered) * 1e3, 2),
        "render_p95_ms": round(percentile(rendered, 0.95) * 1e3, 2),
        "select_p50_ms": round(statistics.median(selected) * 1e3, 2),
        "select_p95_ms": round(percentile(selected, 0.95) * 1e3, 2),
        "ratio": round(statistics.median(rendered) / statistics.median(selected), 3),
        "ratio_target": 2.0,
        "csv_rows_per_s": round(csv_per_s),
        "copy_rows_per_s": round(copy_per_s),
        "csv_ratio": round(csv_per_s / copy_per_s, 3),
        "csv_ratio_target": 0.3,
    }
    path = write_result("console", figures)
    print(path.read_text())


if __name__ == "__main__":
    main()
