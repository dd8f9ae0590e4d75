"""The console's reads: every figure a console page shows, as SQL in one place.

Each method takes the viewer's scope as a parameter (``tenant_id``), never trusts a page to
filter afterwards: an owner's page asks only for its tenant's rows. Spend figures are sums of
``events.cost_usd`` (the ledger record), so the console shows exactly what the ledger holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runledger.store._clocked import ClockedStore

__all__ = ["EXPORT_COLUMNS", "Console", "Filters", "Row"]

Row = dict[str, Any]

STUCK_LIMIT = 10
FAILURE_LIMIT = 10
CAP_NEAR = Decimal("0.8")

EXPORT_COLUMNS = (
    "timestamp", "tenant_id", "project_id", "run_id", "phase", "role", "playbook", "model",
    "status", "attempt", "tokens_in", "tokens_out", "cost_usd", "duration_s", "cached",
    "trace_id", "error", "artifact_path", "artifact_version", "schema_version",
)  # fmt: skip
"""CSV columns: the previous sprint's export (timestamp, preset, trace name, tokens, cost,
duration, status, provider, failure reason, schema version) mapped to the ledger's names."""

EXPORT_SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class Filters:
    """The console's filters; None means "any"."""

    tenant: str | None = None
    model: str | None = None
    phase: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def params(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant, "model": self.model, "phase": self.phase,
            "start": self.start, "end": self.end,
        }  # fmt: skip


def _day_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


class Console(ClockedStore):
    """Read the figures of the console's pages.

    Args: as :class:`ClockedStore` (the ledger database; an optional injected clock).
    """

    def _rows(self, conn: psycopg.Connection, query: str, params: Any = None) -> list[Row]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def _one(self, conn: psycopg.Connection, query: str, params: Any = None) -> Row | None:
        rows = self._rows(conn, query, params)
        return rows[0] if rows else None

    def now(self, conn: psycopg.Connection) -> datetime:
        injected = self._now()
        if injected is not None:
            return injected
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        now: datetime = row[0]
        return now

    # -- admin overview -------------------------------------------------------------------

    def overview(self, filters: Filters, *, failures: bool = True) -> Row:
        """Today's spend by tenant and model, failures, stuck projects, caps at 80%+."""
        with self.db.connection() as conn:
            now = self.now(conn)
            start, end = _day_bounds(now)
            p = {**filters.params(), "day_start": start, "day_end": end, "now": now}
            out: Row = {"now": now, "day": start.date()}
            out.update(self._overview_spend(conn, p))
            out["caps_near"] = self._caps_near(conn, p)
            if failures:
                out["failures"] = self._failures(conn, p)
                out["stuck"] = self._stuck(conn, p)
            return out

    _EVENT_FILTER = (
        " AND (%(tenant)s::text IS NULL OR e.tenant_id = %(tenant)s)"
        " AND (%(model)s::text IS NULL OR e.model = %(model)s)"
        " AND (%(phase)s::text IS NULL OR e.phase = %(phase)s)"
    )

    def _overview_spend(self, conn: psycopg.Connection, p: Row) -> Row:
        # One pass over today's events for both breakdowns (GROUPING SETS).
        rows = self._rows(
            conn,
            "SELECT GROUPING(e.tenant_id) AS by_model, e.tenant_id, e.model,"
            " sum(e.cost_usd) AS cost_usd,"
            " count(*) FILTER (WHERE e.type = 'run_started') AS runs,"
            " sum(e.tokens_in + e.tokens_out) AS tokens"
            " FROM events e WHERE e.occurred_at >= %(day_start)s AND e.occurred_at < %(day_end)s"
            + self._EVENT_FILTER
            + " GROUP BY GROUPING SETS ((e.tenant_id), (e.model))",
            p,
        )
        by_tenant = sorted(
            ({"tenant_id": r["tenant_id"], "cost_usd": r["cost_usd"], "runs": r["runs"]}
             for r in rows if not r["by_model"]),
            key=lambda r: (-r["cost_usd"], r["tenant_id"]),
        )  # fmt: skip
        by_model = sorted(
            ({"model": r["model"], "cost_usd": r["cost_usd"], "tokens": r["tokens"]}
             for r in rows if r["by_model"] and r["model"] is not None),
            key=lambda r: (-r["cost_usd"], r["model"]),
        )  # fmt: skip
        total = sum((r["cost_usd"] for r in by_tenant), Decimal(0))
        return {"spend_by_tenant": by_tenant, "spend_by_model": by_model, "spend_total": total}

    def _caps_near(self, conn: psycopg.Connection, p: Row) -> list[Row]:
        return self._rows(
            conn,
            "SELECT * FROM (SELECT t.tenant_id, t.status,"
            "  cap_effective_usd(t.tenant_id, %(now)s) AS cap_usd,"
            "  COALESCE(cap_spend_usd(c), 0) AS spend_usd"
            "  FROM tenants t LEFT JOIN caps c ON c.tenant_id = t.tenant_id"
            "   AND c.date = (%(now)s::timestamptz AT TIME ZONE 'UTC')::date"
            "  WHERE (%(tenant)s::text IS NULL OR t.tenant_id = %(tenant)s)) x"
            " WHERE spend_usd >= 0.8 * cap_usd"
            " ORDER BY CASE WHEN cap_usd > 0 THEN spend_usd / cap_usd END DESC NULLS FIRST,"
            " tenant_id",
            p,
        )

    def _failures(self, conn: psycopg.Connection, p: Row) -> list[Row]:
        return self._rows(
            conn,
            "SELECT f.run_id, f.tenant_id, f.project_id, f.phase, f.role, f.kind, f.reason,"
            " f.artifact_ref, COALESCE(f.trace_id, r.trace_id) AS trace_id, f.last_seen,"
            " f.count, r.model"
            " FROM failures f LEFT JOIN runs r ON r.run_id = f.run_id"
            " WHERE (%(tenant)s::text IS NULL OR f.tenant_id = %(tenant)s)"
            " AND (%(phase)s::text IS NULL OR f.phase = %(phase)s)"
            " AND (%(model)s::text IS NULL OR r.model = %(model)s)"
            f" ORDER BY f.last_seen DESC, f.failure_id DESC LIMIT {FAILURE_LIMIT}",
            p,
        )

    def _stuck(self, conn: psycopg.Connection, p: Row) -> list[Row]:
        return self._rows(
            conn,
            "SELECT pr.project_id, pr.tenant_id, pr.playbook, pr.current_phase,"
            " pr.phase_entered_at, %(now)s::timestamptz - pr.phase_entered_at AS in_phase,"
            " (SELECT count(*) FROM failures f WHERE f.project_id = pr.project_id"
            "   AND f.phase = pr.current_phase) AS failures"
            " FROM projects pr"
            " WHERE pr.current_phase IS NOT NULL AND pr.phase_entered_at IS NOT NULL"
            " AND (%(tenant)s::text IS NULL OR pr.tenant_id = %(tenant)s)"
            " AND (%(phase)s::text IS NULL OR pr.current_phase = %(phase)s)"
            " AND pr.current_phase NOT IN ('done', 'published', 'shipped')"
            f" ORDER BY pr.phase_entered_at, pr.project_id LIMIT {STUCK_LIMIT}",
            p,
        )

    # -- banners --------------------------------------------------------------------------

    def banners(self, *, audience: str, tenant_id: str | None) -> list[Row]:
        """Active banners: admins see the admin audience; an owner sees its tenant's.

        A banner from an Alertmanager alert carries its alertname, fingerprint and start
        (what judging it needs) and, once judged, the judgement (``outcome``, ...)."""
        with self.db.connection() as conn:
            return self._rows(
                conn,
                "SELECT n.notification_id, n.tenant_id, n.audience, n.severity, n.title, n.body,"
                " n.source, n.created_at, n.alertname, n.fingerprint, n.starts_at,"
                " o.outcome, o.judged_by, o.judged_at, o.note AS judged_note"
                " FROM notifications n LEFT JOIN alert_outcomes o"
                "  ON o.fingerprint = n.fingerprint AND o.started_at = n.starts_at"
                " WHERE n.resolved_at IS NULL AND n.dismissed_at IS NULL AND n.audience = %s"
                " AND (n.tenant_id IS NOT DISTINCT FROM %s)"
                " ORDER BY CASE n.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,"
                " n.created_at DESC LIMIT 20",
                (audience, tenant_id),
            )

    def banner(self, notification_id: int) -> Row | None:
        """Return one banner's audience, tenant and alert identity (what judging needs)."""
        with self.db.connection() as conn:
            return self._one(
                conn,
                "SELECT notification_id, tenant_id, audience, alertname, fingerprint, starts_at,"
                " resolved_at FROM notifications WHERE notification_id = %s",
                (notification_id,),
            )

    # -- tenant page ----------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> Row | None:
        """Return the tenant's row, or None."""
        with self.db.connection() as conn:
            return self._one(
                conn,
                "SELECT tenant_id, display_name, daily_cap_usd, status, paused_reason,"
                " owner_sees_tokens, created_at FROM tenants WHERE tenant_id = %s",
                (tenant_id,),
            )

    def tenant_page(self, tenant_id: str) -> Row:
        """Spend trend, time-to-gate, recent ships, proof completion, projects, runs."""
        with self.db.connection() as conn:
            now = self.now(conn)
            start, end = _day_bounds(now)
            p = {"t": tenant_id, "now": now, "day_start": start, "day_end": end,
                 "since": start - timedelta(days=29)}  # fmt: skip
            trend = self._rows(
                conn,
                "SELECT (e.occurred_at AT TIME ZONE 'UTC')::date AS day,"
                " sum(e.cost_usd) AS cost_usd"
                " FROM events e WHERE e.tenant_id = %(t)s AND e.occurred_at >= %(since)s"
                " AND e.occurred_at < %(day_end)s GROUP BY 1 ORDER BY 1",
                p,
            )
            last_hour = self._one(
                conn,
                "SELECT COALESCE(sum(cost_usd), 0) AS usd FROM events WHERE tenant_id = %(t)s"
                " AND occurred_at > %(now)s::timestamptz - interval '1 hour'"
                " AND occurred_at <= %(now)s AND occurred_at >= %(day_start)s",
                p,
            )
            gate = self._one(
                conn,
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY secs) AS median_s,"
                " count(*) AS gates FROM ("
                "  SELECT extract(epoch FROM e.occurred_at - (SELECT max(x.occurred_at)"
                "    FROM events x WHERE x.project_id = e.project_id AND x.type = 'phase_entered'"
                "    AND x.phase = e.phase AND x.occurred_at <= e.occurred_at)) AS secs"
                "  FROM events e WHERE e.tenant_id = %(t)s AND e.type = 'phase_advanced'"
                "  AND e.occurred_at >= %(since)s) g WHERE secs IS NOT NULL",
                p,
            )
            ships = self._rows(
                conn,
                "SELECT e.occurred_at, e.project_id, e.run_id, e.artifact_path, e.payload"
                " FROM events e WHERE e.tenant_id = %(t)s AND e.type = 'publish_done'"
                " AND e.occurred_at >= %(since)s ORDER BY e.occurred_at DESC LIMIT 10",
                p,
            )
            proofs = self._one(
                conn,
                "SELECT count(*) AS requested, count(completed_at) AS completed,"
                " count(*) FILTER (WHERE completed_at IS NULL AND due_at < %(now)s) AS overdue"
                " FROM proofs WHERE tenant_id = %(t)s AND requested_at >= %(since)s",
                p,
            )
            projects = self._rows(
                conn,
                "SELECT project_id, playbook, current_phase, phase_entered_at, last_advanced_at"
                " FROM projects WHERE tenant_id = %(t)s ORDER BY phase_entered_at DESC NULLS LAST,"
                " project_id LIMIT 50",
                p,
            )
            runs = self._rows(
                conn,
                "SELECT run_id, project_id, phase, role, status, model, cost_usd, tokens_in,"
                " tokens_out, started_at, finished_at FROM runs WHERE tenant_id = %(t)s"
                " ORDER BY status_at DESC LIMIT 20",
                p,
            )
        elapsed_h = Decimal((now - start).total_seconds()) / 3600
        today = next((r["cost_usd"] for r in trend if r["day"] == start.date()), Decimal(0))
        rate = last_hour["usd"] if last_hour else Decimal(0)
        projected = today + rate * (Decimal(24) - elapsed_h)
        return {
            "now": now, "trend": _fill_days(trend, start.date(), 30), "spend_today": today,
            "projected_usd": projected, "time_to_gate": gate, "ships": ships,
            "proofs": proofs, "projects": projects, "runs": runs,
        }  # fmt: skip

    # -- project page ---------------------------------------------------------------------

    def project(self, project_id: str) -> Row | None:
        """Return the project's row, or None."""
        with self.db.connection() as conn:
            return self._one(
                conn,
                "SELECT project_id, tenant_id, playbook, current_phase, phase_entered_at,"
                " last_advanced_at, created_at FROM projects WHERE project_id = %s",
                (project_id,),
            )

    def project_page(self, project: Row) -> Row:
        """Phase timeline, artifacts, open flags, runs and every reason it is blocked."""
        pid, tenant = project["project_id"], project["tenant_id"]
        with self.db.connection() as conn:
            now = self.now(conn)
            p = {
                "p": pid, "t": tenant, "now": now, "pb": project["playbook"],
                "phase": project["current_phase"],
            }  # fmt: skip
            phases = self._rows(
                conn,
                "SELECT type, phase, occurred_at, payload->>'to_phase' AS to_phase, run_id"
                " FROM events WHERE project_id = %(p)s"
                " AND type IN ('phase_entered', 'phase_advanced')"
                " ORDER BY occurred_at, seq",
                p,
            )
            artifacts = self._rows(
                conn,
                "SELECT artifact_path, max(artifact_version) AS version, max(occurred_at) AS at,"
                " (array_agg(run_id ORDER BY occurred_at DESC))[1] AS run_id"
                " FROM events WHERE project_id = %(p)s AND artifact_path IS NOT NULL"
                " GROUP BY artifact_path ORDER BY at DESC LIMIT 50",
                p,
            )
            failures = self._rows(
                conn,
                "SELECT run_id, phase, role, kind, reason, artifact_ref, trace_id, last_seen, count"
                " FROM failures WHERE project_id = %(p)s ORDER BY last_seen DESC LIMIT 20",
                p,
            )
            overrides = self._rows(
                conn,
                "SELECT run_id, occurred_at, payload FROM events WHERE project_id = %(p)s"
                " AND type = 'user_override' ORDER BY occurred_at DESC LIMIT 10",
                p,
            )
            runs = self._rows(
                conn,
                "SELECT run_id, phase, role, status, attempt, model, cost_usd, tokens_in,"
                " tokens_out, started_at, finished_at, error FROM runs WHERE project_id = %(p)s"
                " ORDER BY COALESCE(started_at, status_at) DESC LIMIT 30",
                p,
            )
            blocked = self._why_blocked(conn, p)
        return {"now": now, "phases": _phase_spans(phases, now), "artifacts": artifacts,
                "failures": failures, "overrides": overrides, "runs": runs,
                "why_blocked": blocked}  # fmt: skip

    def _why_blocked(self, conn: psycopg.Connection, p: Row) -> list[Row]:
        """Every reason the project cannot advance, each with its evidence."""
        reasons: list[Row] = []
        cap = self._one(
            conn,
            "SELECT cap_effective_usd(%(t)s, %(now)s) AS cap_usd, COALESCE(cap_spend_usd(c), 0)"
            " AS spend_usd, COALESCE(c.blocked, false) AS blocked FROM tenants t"
            " LEFT JOIN caps c ON c.tenant_id = t.tenant_id"
            " AND c.date = (%(now)s::timestamptz AT TIME ZONE 'UTC')::date"
            " WHERE t.tenant_id = %(t)s",
            p,
        )
        if cap and (cap["blocked"] or cap["spend_usd"] >= cap["cap_usd"]):
            reasons.append({"kind": "cap_reached", **cap})
        paused = self._one(
            conn,
            "SELECT t.paused_reason, (SELECT a.at FROM audit_log a WHERE a.tenant_id = t.tenant_id"
            " AND a.action = 'tenant_paused' ORDER BY a.at DESC LIMIT 1) AS paused_at,"
            " (SELECT a.actor FROM audit_log a WHERE a.tenant_id = t.tenant_id"
            " AND a.action = 'tenant_paused' ORDER BY a.at DESC LIMIT 1) AS paused_by"
            " FROM tenants t WHERE t.tenant_id = %(t)s AND t.status = 'paused'",
            p,
        )
        if paused:
            reasons.append({"kind": "tenant_paused", **paused})
        if p["pb"]:
            frozen = self._one(
                conn,
                "SELECT freeze_id, playbook, reason, frozen_by, frozen_at FROM publisher_freezes"
                " WHERE playbook = %(pb)s AND lifted_at IS NULL",
                p,
            )
            if frozen:
                reasons.append({"kind": "publisher_frozen", **frozen})
        if p["phase"]:
            invalid = self._rows(
                conn,
                "SELECT f.run_id, f.reason, f.artifact_ref, f.last_seen FROM failures f"
                " WHERE f.project_id = %(p)s AND f.phase = %(phase)s"
                " AND f.kind = 'validation_failed'"
                " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.project_id = f.project_id"
                "   AND r.phase = f.phase AND r.status = 'succeeded' AND r.role = f.role"
                "   AND r.finished_at > f.last_seen)"
                " ORDER BY f.last_seen DESC LIMIT 5",
                p,
            )
            for row in invalid:
                reasons.append({"kind": "failing_validation", **row})
        overdue = self._rows(
            conn,
            "SELECT proof_id, requested_at, due_at FROM proofs WHERE project_id = %(p)s"
            " AND completed_at IS NULL AND due_at < %(now)s ORDER BY due_at",
            p,
        )
        for row in overdue:
            reasons.append({"kind": "proof_overdue", **row})
        return reasons

    # -- run page -------------------------------------------------------------------------

    def run(self, run_id: str) -> Row | None:
        """Return the run's row, or None."""
        with self.db.connection() as conn:
            return self._one(conn, "SELECT * FROM runs WHERE run_id = %s", (run_id,))

    def run_page(self, run: Row) -> Row:
        """Events timeline, costs per model, errors, artifacts, spans, rerun requests."""
        rid = run["run_id"]
        with self.db.connection() as conn:
            events = self._rows(
                conn,
                "SELECT seq, type, occurred_at, phase, role, model, tokens_in, tokens_out,"
                " cost_usd, cached, artifact_path, artifact_version, attempt, trace_id, span_id,"
                " payload FROM events WHERE run_id = %s ORDER BY occurred_at, seq LIMIT 1000",
                (rid,),
            )
            costs = self._rows(
                conn,
                "SELECT COALESCE(model, '') AS model, count(*) AS events, sum(tokens_in) AS"
                " tokens_in, sum(tokens_out) AS tokens_out, sum(cost_usd) AS cost_usd"
                " FROM events WHERE run_id = %s AND (cost_usd > 0 OR tokens_in + tokens_out > 0)"
                " GROUP BY 1 ORDER BY cost_usd DESC",
                (rid,),
            )
            errors = self._rows(
                conn,
                "SELECT kind, reason, artifact_ref, first_seen, last_seen, count FROM failures"
                " WHERE run_id = %s ORDER BY last_seen DESC",
                (rid,),
            )
            spans = self._rows(
                conn,
                "SELECT trace_id, span_id, parent_span_id, name, started_at, duration_ms"
                " FROM trace_spans WHERE run_id = %s ORDER BY started_at LIMIT 200",
                (rid,),
            )
            reruns = self._rows(
                conn,
                "SELECT request_id, status, reason, requested_by, requested_at, claimed_by,"
                " claimed_at, new_run_id FROM rerun_requests WHERE run_id = %s"
                " ORDER BY requested_at DESC",
                (rid,),
            )
        # The snapshot: each artifact version the run wrote or named, latest mention kept.
        latest = {
            (e["artifact_path"], e["artifact_version"]): e for e in events if e["artifact_path"]
        }
        artifacts = sorted(latest.values(), key=lambda e: e["occurred_at"])
        return {"events": events, "costs": costs, "errors": errors, "spans": spans,
                "reruns": reruns, "artifacts": artifacts}  # fmt: skip

    # -- audit ----------------------------------------------------------------------------

    def audit(self, tenant_id: str | None, limit: int = 20) -> list[Row]:
        """Return the newest audit rows of a tenant (all tenants when None)."""
        with self.db.connection() as conn:
            return self._rows(
                conn,
                "SELECT audit_id, at, actor, actor_role, action, tenant_id, target, details"
                " FROM audit_log WHERE (%s::text IS NULL OR tenant_id = %s)"
                " ORDER BY at DESC, audit_id DESC LIMIT %s",
                (tenant_id, tenant_id, limit),
            )

    def tenants(self) -> list[str]:
        """Return every tenant id (for filter menus)."""
        with self.db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT tenant_id FROM tenants ORDER BY 1")]

    # -- CSV export -----------------------------------------------------------------------

    EXPORT_QUERY = (
        "SELECT COALESCE(r.started_at, r.queued_at, r.status_at) AS timestamp, r.tenant_id,"
        " r.project_id, r.run_id, r.phase, r.role, r.playbook, r.model, r.status, r.attempt,"
        " CASE WHEN %(tokens)s THEN r.tokens_in END AS tokens_in,"
        " CASE WHEN %(tokens)s THEN r.tokens_out END AS tokens_out, r.cost_usd,"
        " round(extract(epoch FROM r.finished_at - r.started_at), 3) AS duration_s,"
        " CASE WHEN r.cached THEN 'true' ELSE 'false' END AS cached, r.trace_id, r.error,"
        " CASE WHEN %(artifacts)s THEN r.artifact_path END AS artifact_path,"
        " CASE WHEN %(artifacts)s THEN r.artifact_version END AS artifact_version,"
        " %(schema)s::text AS schema_version"
        " FROM runs r"
        " WHERE (%(tenant)s::text IS NULL OR r.tenant_id = %(tenant)s)"
        " AND (%(model)s::text IS NULL OR r.model = %(model)s)"
        " AND (%(phase)s::text IS NULL OR r.phase = %(phase)s)"
        " AND (%(start)s::timestamptz IS NULL OR r.status_at >= %(start)s)"
        " AND (%(end)s::timestamptz IS NULL OR r.status_at < %(end)s)"
        " ORDER BY r.status_at, r.run_id"
    )
    """Runs and their costs, one CSV row each (columns ``EXPORT_COLUMNS``)."""

    def export_params(
        self, filters: Filters, *, tokens: bool, artifacts: bool = True
    ) -> dict[str, Any]:
        """Return the export query's parameters."""
        return {**filters.params(), "tokens": tokens, "artifacts": artifacts,
                "schema": EXPORT_SCHEMA_VERSION}  # fmt: skip

    def export_csv(
        self, filters: Filters, *, tokens: bool = True, artifacts: bool = True,
        chunk: int = 1 << 16,
    ) -> Iterator[bytes]:  # fmt: skip
        """Yield the filtered runs as CSV (header first), streamed by PostgreSQL's COPY.

        The server writes the CSV and this generator passes it on in chunks of ``chunk``
        bytes: memory stays bounded whatever the row count, and every value is the ledger's
        own text (times in UTC). The connection stays checked out while the generator lives.
        """
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute("SET LOCAL TimeZone = 'UTC'")
            statement = f"COPY ({self.EXPORT_QUERY}) TO STDOUT WITH (FORMAT csv, HEADER)"
            buf = bytearray()
            params = self.export_params(filters, tokens=tokens, artifacts=artifacts)
            with cur.copy(statement, params) as copy:
                for data in copy:
                    buf += data
                    if len(buf) >= chunk:
                        yield bytes(buf)
                        buf.clear()
            if buf:
                yield bytes(buf)


def _fill_days(rows: list[Row], today: date, days: int) -> list[Row]:
    """Return one row per day of the last ``days`` days (zero where nothing was spent)."""
    found = {r["day"]: r["cost_usd"] for r in rows}
    first = today - timedelta(days=days - 1)
    return [
        {
            "day": first + timedelta(days=i),
            "cost_usd": found.get(first + timedelta(days=i), Decimal(0)),
        }
        for i in range(days)
    ]


def _phase_spans(events: list[Row], now: datetime) -> list[Row]:
    """Turn phase_entered/phase_advanced events into [phase, start, end] spans."""
    spans: list[Row] = []
    for ev in events:
        phase = ev["to_phase"] if ev["type"] == "phase_advanced" else ev["phase"]
        if ev["type"] == "phase_advanced" and not ev["to_phase"]:
            if spans and spans[-1]["end"] is None:
                spans[-1]["end"] = ev["occurred_at"]
            continue
        if spans and spans[-1]["phase"] == phase and spans[-1]["end"] is None:
            continue
        if spans and spans[-1]["end"] is None:
            spans[-1]["end"] = ev["occurred_at"]
        spans.append({"phase": phase, "start": ev["occurred_at"], "end": None})
    for span in spans:
        span["open"] = span["end"] is None
        span["end"] = span["end"] or now
    return spans
