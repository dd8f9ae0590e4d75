"""Store a batch of validated events and their effects in one transaction.

Effects: the ``runs`` row of each run, ``failures`` (deduplicated by run and reason), the
tenant's ``caps`` spend for each UTC day, ``projects`` (current phase, last advance) and
``proofs``. Either the whole batch (minus rejected events) is stored, or nothing is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson
import psycopg

from runledger.events import EventError
from runledger.store._database import Database
from runledger.store.partitions import PartitionCache

__all__ = ["EventResult", "IngestLimits", "Ingestor"]

INGEST_LOCK = 0x72756E6C_696E6773  # "runlings": seq order == commit order
_FUTURE_SKEW = timedelta(minutes=5)
_STATUS_RANK = {"queued": 0, "running": 1, "succeeded": 2, "partial": 2, "failed": 2}

_EVENT_COLUMNS = (
    "event_id", "type", "tenant_id", "project_id", "run_id", "phase", "role", "playbook",
    "occurred_at", "tokens_in", "tokens_out", "cost_usd", "model", "cached", "artifact_path",
    "artifact_version", "attempt", "trace_id", "span_id", "payload",
)  # fmt: skip
_COPY_EVENTS = f"COPY events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"


@dataclass
class EventResult:
    """What happened to one event of a batch."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    errors: list[EventError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.errors:
            out["errors"] = [e.model_dump() for e in self.errors]
        return out


@dataclass(frozen=True)
class IngestLimits:
    """Time bounds on ``occurred_at``: not older than the retention window, not future."""

    retention_days: int = 30

    def check(self, at: datetime, now: datetime) -> str | None:
        if at > now + _FUTURE_SKEW:
            return "is in the future (more than 5 minutes ahead of the server clock)"
        if at < now - timedelta(days=self.retention_days):
            return f"is older than the retention window ({self.retention_days} days)"
        return None


def _reject(index: int, event_id: str | None, field_name: str, message: str) -> EventResult:
    return EventResult(index, "rejected", event_id, [EventError(field=field_name, message=message)])


@dataclass
class _RunAgg:
    tenant_id: str
    project_id: str
    phase: str
    role: str
    playbook: str | None = None
    status: str = "running"
    status_at: datetime | None = None
    attempt: int = 1
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal = Decimal(0)
    error: str | None = None
    model: str | None = None
    model_at: datetime | None = None
    cached: bool = False
    trace_id: str | None = None
    artifact_path: str | None = None
    artifact_version: int | None = None
    artifact_at: datetime | None = None
    first_at: datetime | None = None

    def set_status(self, status: str, at: datetime) -> None:
        rank, mine = _STATUS_RANK[status], _STATUS_RANK[self.status]
        if self.status_at is None or rank > mine or (rank == mine and at >= self.status_at):
            self.status, self.status_at = status, at


def _min(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def _max(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


class Ingestor:
    """Write validated events to the ledger.

    Args:
        db: the ledger database.
        limits: time bounds applied to ``occurred_at``.
    """

    def __init__(self, db: Database, limits: IngestLimits | None = None) -> None:
        self.db = db
        self.limits = limits or IngestLimits()
        self.partitions = PartitionCache()

    def ingest(
        self, events: Sequence[Any], *, indexes: Sequence[int] | None = None
    ) -> list[EventResult]:
        """Store ``events`` (validated models); return one result per event.

        Raises:
            DatabaseUnavailable: PostgreSQL could not be reached or failed mid-batch; nothing
                of the batch was stored and the whole batch may be re-sent.
        """
        indexes = list(indexes) if indexes is not None else list(range(len(events)))
        now = datetime.now(UTC)
        results: dict[int, EventResult] = {}
        candidates: list[tuple[int, Any]] = []
        for idx, ev in zip(indexes, events, strict=True):
            problem = self.limits.check(ev.occurred_at, now)
            if problem:
                results[idx] = _reject(idx, str(ev.event_id), "occurred_at", problem)
            else:
                candidates.append((idx, ev))
        if candidates:
            for attempt in range(2):
                try:
                    results.update(self._store(candidates))
                    break
                except psycopg.errors.CheckViolation as exc:
                    # "no partition of relation events found for row": a partition this
                    # process believed in was dropped by retention; look again once.
                    if attempt or "partition" not in str(exc):
                        raise
                    self.partitions.forget()
        return [results[i] for i in indexes]

    def _store(self, candidates: list[tuple[int, Any]]) -> dict[int, EventResult]:
        results: dict[int, EventResult] = {}
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK,))
            owners = self._owners(conn, candidates)
            valid = self._check_ownership(candidates, owners, results)
            accepted = self._dedupe(conn, valid, results)
            if accepted:
                days = {ev.occurred_at.astimezone(UTC).date() for _, ev in accepted}
                self.partitions.ensure(conn, days)
                self._copy_events(conn, accepted)
                self._apply_effects(conn, [ev for _, ev in accepted])
        return results

    # -- checks --------------------------------------------------------------------------

    @staticmethod
    def _owners(conn: psycopg.Connection, candidates: list[tuple[int, Any]]) -> dict[str, dict]:
        tenants = sorted({ev.tenant_id for _, ev in candidates})
        projects = sorted({ev.project_id for _, ev in candidates})
        runs = sorted({ev.run_id for _, ev in candidates})
        rows = conn.execute(
            "SELECT 't', tenant_id, tenant_id FROM tenants WHERE tenant_id = ANY(%s)"
            " UNION ALL SELECT 'p', project_id, tenant_id FROM projects WHERE project_id = ANY(%s)"
            " UNION ALL SELECT 'r', run_id, tenant_id FROM runs WHERE run_id = ANY(%s)",
            (tenants, projects, runs),
        ).fetchall()
        owners: dict[str, dict] = {"t": {}, "p": {}, "r": {}}
        for kind, key, tenant in rows:
            owners[kind][key] = tenant
        return owners

    @staticmethod
    def _check_ownership(
        candidates: list[tuple[int, Any]], owners: dict[str, dict], results: dict[int, EventResult]
    ) -> list[tuple[int, Any]]:
        valid = []
        projects, runs = dict(owners["p"]), dict(owners["r"])
        for idx, ev in candidates:
            eid = str(ev.event_id)
            if ev.tenant_id not in owners["t"]:
                results[idx] = _reject(idx, eid, "tenant_id", f"unknown tenant {ev.tenant_id!r}")
                continue
            owner = projects.setdefault(ev.project_id, ev.tenant_id)
            if owner != ev.tenant_id:
                results[idx] = _reject(idx, eid, "project_id", "project belongs to another tenant")
                continue
            owner = runs.setdefault(ev.run_id, ev.tenant_id)
            if owner != ev.tenant_id:
                results[idx] = _reject(idx, eid, "run_id", "run belongs to another tenant")
                continue
            valid.append((idx, ev))
        return valid

    @staticmethod
    def _dedupe(
        conn: psycopg.Connection, valid: list[tuple[int, Any]], results: dict[int, EventResult]
    ) -> list[tuple[int, Any]]:
        first: dict[Any, tuple[int, Any]] = {}
        for idx, ev in valid:
            if ev.event_id in first:
                results[idx] = EventResult(idx, "duplicate", str(ev.event_id))
            else:
                first[ev.event_id] = (idx, ev)
        if not first:
            return []
        ids = list(first)
        rows = conn.execute(
            "INSERT INTO event_ids (event_id, occurred_at)"
            " SELECT * FROM unnest(%s::uuid[], %s::timestamptz[])"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            (ids, [first[i][1].occurred_at for i in ids]),
        ).fetchall()
        new = {r[0] for r in rows}
        accepted = []
        for event_id, (idx, ev) in first.items():
            if event_id in new:
                results[idx] = EventResult(idx, "accepted", str(event_id))
                accepted.append((idx, ev))
            else:
                results[idx] = EventResult(idx, "duplicate", str(event_id))
        return accepted

    # -- writes --------------------------------------------------------------------------

    @staticmethod
    def _copy_events(conn: psycopg.Connection, accepted: list[tuple[int, Any]]) -> None:
        with conn.cursor() as cur, cur.copy(_COPY_EVENTS) as copy:
            for _, ev in accepted:
                payload = ev.payload
                if not isinstance(payload, dict):
                    payload = payload.model_dump(mode="json", exclude_none=True)
                copy.write_row(
                    (
                        ev.event_id, ev.type, ev.tenant_id, ev.project_id, ev.run_id, ev.phase,
                        ev.role, ev.playbook, ev.occurred_at, ev.tokens_in, ev.tokens_out,
                        ev.cost_usd, ev.model, ev.cached, ev.artifact_path, ev.artifact_version,
                        getattr(ev, "attempt", None), ev.trace_id, ev.span_id,
                        orjson.dumps(payload).decode(),
                    )
                )  # fmt: skip

    def _apply_effects(self, conn: psycopg.Connection, events: list[Any]) -> None:
        runs: dict[str, _RunAgg] = {}
        failures: dict[tuple[str, str], dict[str, Any]] = {}
        spend: dict[tuple[str, date], Decimal] = {}
        projects: dict[str, dict[str, Any]] = {}
        proofs: dict[str, dict[str, Any]] = {}
        for ev in events:
            at = ev.occurred_at
            run = runs.get(ev.run_id)
            if run is None:
                run = runs[ev.run_id] = _RunAgg(ev.tenant_id, ev.project_id, ev.phase, ev.role)
            self._fold_run(run, ev)
            proj = projects.setdefault(
                ev.project_id,
                {"tenant_id": ev.tenant_id, "playbook": None, "phase": None, "phase_at": None,
                 "advanced_at": None},
            )  # fmt: skip
            proj["playbook"] = ev.playbook or proj["playbook"]
            if ev.type == "phase_entered" and (proj["phase_at"] is None or at >= proj["phase_at"]):
                proj["phase"], proj["phase_at"] = ev.phase, at
            elif ev.type == "phase_advanced":
                proj["advanced_at"] = _max(proj["advanced_at"], at)
                nxt = ev.payload.to_phase
                if nxt and (proj["phase_at"] is None or at >= proj["phase_at"]):
                    proj["phase"], proj["phase_at"] = nxt, at
            if ev.type in ("run_failed", "validation_failed"):
                key = (ev.run_id, ev.payload.reason)
                fail = failures.get(key)
                if fail is None:
                    artifact = (
                        f"{ev.artifact_path}@{ev.artifact_version}"
                        if ev.artifact_path and ev.artifact_version
                        else ev.artifact_path
                    )
                    failures[key] = {
                        "ev": ev, "first": at, "last": at, "count": 1, "artifact": artifact,
                    }  # fmt: skip
                else:
                    fail["first"], fail["last"] = _min(fail["first"], at), _max(fail["last"], at)
                    fail["count"] += 1
            if ev.cost_usd:
                day_key = (ev.tenant_id, at.astimezone(UTC).date())
                spend[day_key] = spend.get(day_key, Decimal(0)) + ev.cost_usd
            if ev.type == "proof_requested":
                p = proofs.setdefault(ev.payload.proof_id, {"ev": ev})
                p["requested_at"], p["due_at"] = at, ev.payload.due_at
            elif ev.type == "proof_completed":
                p = proofs.setdefault(ev.payload.proof_id, {"ev": ev})
                p["completed_at"], p["approved"] = at, ev.payload.approved
        self._write_projects(conn, projects)
        self._write_runs(conn, runs)
        if failures:
            self._write_failures(conn, failures)
        if spend:
            self._write_spend(conn, spend)
        if proofs:
            self._write_proofs(conn, proofs)

    @staticmethod
    def _fold_run(run: _RunAgg, ev: Any) -> None:
        at = ev.occurred_at
        run.first_at = _min(run.first_at, at)
        run.playbook = ev.playbook or run.playbook
        run.tokens_in += ev.tokens_in
        run.tokens_out += ev.tokens_out
        run.cost_usd += ev.cost_usd
        run.cached = run.cached or ev.cached
        run.trace_id = run.trace_id or ev.trace_id
        if ev.model and (run.model_at is None or at >= run.model_at):
            run.model, run.model_at = ev.model, at
        if ev.artifact_path and (run.artifact_at is None or at >= run.artifact_at):
            run.artifact_path, run.artifact_version, run.artifact_at = (
                ev.artifact_path, ev.artifact_version, at,
            )  # fmt: skip
        kind = ev.type
        if kind == "run_queued":
            run.queued_at = _min(run.queued_at, at)
            run.attempt = max(run.attempt, ev.attempt)
            run.set_status("queued", at)
        elif kind == "run_started":
            run.started_at = _min(run.started_at, at)
            run.attempt = max(run.attempt, ev.attempt)
            run.set_status("running", at)
        elif kind == "run_finished":
            run.finished_at = _max(run.finished_at, at)
            run.set_status(ev.payload.status, at)
        elif kind == "run_failed":
            run.finished_at = _max(run.finished_at, at)
            run.error = ev.payload.reason
            run.set_status("failed", at)

    @staticmethod
    def _write_projects(conn: psycopg.Connection, projects: dict[str, dict[str, Any]]) -> None:
        ids = list(projects)
        cols = [[projects[p][k] for p in ids] for k in
                ("tenant_id", "playbook", "phase", "phase_at", "advanced_at")]  # fmt: skip
        conn.execute(
            "INSERT INTO projects AS p (project_id, tenant_id, playbook, current_phase,"
            " phase_entered_at, last_advanced_at)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::timestamptz[], %s::timestamptz[])"
            " ON CONFLICT (project_id) DO UPDATE SET"
            " playbook = COALESCE(excluded.playbook, p.playbook),"
            " current_phase = CASE WHEN excluded.phase_entered_at IS NOT NULL AND"
            "   (p.phase_entered_at IS NULL OR excluded.phase_entered_at >= p.phase_entered_at)"
            "   THEN excluded.current_phase ELSE p.current_phase END,"
            " phase_entered_at = GREATEST(p.phase_entered_at, excluded.phase_entered_at),"
            " last_advanced_at = GREATEST(p.last_advanced_at, excluded.last_advanced_at)",
            (ids, *cols),
        )

    @staticmethod
    def _write_runs(conn: psycopg.Connection, runs: dict[str, _RunAgg]) -> None:
        ids = list(runs)
        aggs = [runs[r] for r in ids]

        def col(name: str) -> list[Any]:
            return [getattr(a, name) for a in aggs]

        newer = (
            "(run_status_rank(excluded.status), excluded.status_at)"
            " >= (run_status_rank(r.status), r.status_at)"
        )
        conn.execute(
            "INSERT INTO runs AS r (run_id, tenant_id, project_id, phase, role, playbook, status,"
            " status_at, attempt, queued_at, started_at, finished_at, tokens_in, tokens_out,"
            " cost_usd, error, model, cached, trace_id, artifact_path, artifact_version)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::timestamptz[], %s::int[], %s::timestamptz[],"
            " %s::timestamptz[], %s::timestamptz[], %s::bigint[], %s::bigint[], %s::numeric[],"
            " %s::text[], %s::text[], %s::bool[], %s::text[], %s::text[], %s::int[])"
            " ON CONFLICT (run_id) DO UPDATE SET"
            " playbook = COALESCE(excluded.playbook, r.playbook),"
            f" status = CASE WHEN {newer} THEN excluded.status ELSE r.status END,"
            f" status_at = CASE WHEN {newer} THEN excluded.status_at ELSE r.status_at END,"
            " attempt = GREATEST(r.attempt, excluded.attempt),"
            " queued_at = LEAST(r.queued_at, excluded.queued_at),"
            " started_at = LEAST(r.started_at, excluded.started_at),"
            " finished_at = GREATEST(r.finished_at, excluded.finished_at),"
            " tokens_in = r.tokens_in + excluded.tokens_in,"
            " tokens_out = r.tokens_out + excluded.tokens_out,"
            " cost_usd = r.cost_usd + excluded.cost_usd,"
            " error = COALESCE(excluded.error, r.error),"
            " model = COALESCE(excluded.model, r.model),"
            " cached = r.cached OR excluded.cached,"
            " trace_id = COALESCE(r.trace_id, excluded.trace_id),"
            " artifact_path = COALESCE(excluded.artifact_path, r.artifact_path),"
            " artifact_version = COALESCE(excluded.artifact_version, r.artifact_version),"
            " updated_at = now()",
            (
                ids,
                col("tenant_id"),
                col("project_id"),
                col("phase"),
                col("role"),
                col("playbook"),
                col("status"),
                [a.status_at or a.first_at for a in aggs],
                col("attempt"),
                col("queued_at"),
                col("started_at"),
                col("finished_at"),
                col("tokens_in"),
                col("tokens_out"),
                col("cost_usd"),
                col("error"),
                col("model"),
                col("cached"),
                col("trace_id"),
                col("artifact_path"),
                col("artifact_version"),
            ),
        )

    @staticmethod
    def _write_failures(
        conn: psycopg.Connection, failures: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        vals = list(failures.values())
        conn.execute(
            "INSERT INTO failures AS f (run_id, tenant_id, project_id, phase, role, kind, reason,"
            " artifact_ref, trace_id, first_seen, last_seen, count)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],"
            " %s::timestamptz[], %s::int[])"
            " ON CONFLICT (run_id, reason) DO UPDATE SET"
            " first_seen = LEAST(f.first_seen, excluded.first_seen),"
            " last_seen = GREATEST(f.last_seen, excluded.last_seen),"
            " count = f.count + excluded.count,"
            " artifact_ref = COALESCE(excluded.artifact_ref, f.artifact_ref),"
            " trace_id = COALESCE(f.trace_id, excluded.trace_id)",
            (
                [v["ev"].run_id for v in vals],
                [v["ev"].tenant_id for v in vals],
                [v["ev"].project_id for v in vals],
                [v["ev"].phase for v in vals],
                [v["ev"].role for v in vals],
                [v["ev"].type for v in vals],
                [v["ev"].payload.reason for v in vals],
                [v["artifact"] for v in vals],
                [v["ev"].trace_id for v in vals],
                [v["first"] for v in vals],
                [v["last"] for v in vals],
                [v["count"] for v in vals],
            ),
        )

    @staticmethod
    def _write_spend(conn: psycopg.Connection, spend: dict[tuple[str, date], Decimal]) -> None:
        keys = list(spend)
        conn.execute(
            "INSERT INTO caps AS c (tenant_id, date, daily_cap_usd, spent_usd, blocked)"
            " SELECT s.tenant_id, s.day, t.daily_cap_usd, s.spent, s.spent >= t.daily_cap_usd"
            " FROM unnest(%s::text[], %s::date[], %s::numeric[]) AS s(tenant_id, day, spent)"
            " JOIN tenants t USING (tenant_id)"
            " ON CONFLICT (tenant_id, date) DO UPDATE SET"
            " spent_usd = c.spent_usd + excluded.spent_usd,"
            " blocked = c.spent_usd + excluded.spent_usd >= c.daily_cap_usd,"
            " updated_at = now()",
            ([k[0] for k in keys], [k[1] for k in keys], [spend[k] for k in keys]),
        )

    @staticmethod
    def _write_proofs(conn: psycopg.Connection, proofs: dict[str, dict[str, Any]]) -> None:
        requested = [(k, v) for k, v in proofs.items() if "requested_at" in v]
        completed = [(k, v) for k, v in proofs.items() if "completed_at" in v]
        # A completion may arrive before its request: the row is created from whichever
        # comes first and the request's times overwrite the placeholder ones.
        for rows, sets in (
            (requested, "requested_at = excluded.requested_at, due_at = excluded.due_at"),
            (completed, "completed_at = excluded.completed_at, approved = excluded.approved"),
        ):
            if not rows:
                continue
            conn.execute(
                "INSERT INTO proofs AS p (proof_id, tenant_id, project_id, requested_at, due_at,"
                " completed_at, approved)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[],"
                " %s::timestamptz[], %s::timestamptz[], %s::bool[])"
                f" ON CONFLICT (proof_id) DO UPDATE SET {sets}"
                " WHERE p.tenant_id = excluded.tenant_id",
                (
                    [k for k, _ in rows],
                    [v["ev"].tenant_id for _, v in rows],
                    [v["ev"].project_id for _, v in rows],
                    [v.get("requested_at") or v["completed_at"] for _, v in rows],
                    [v.get("due_at") or v["completed_at"] for _, v in rows],
                    [v.get("completed_at") for _, v in rows],
                    [v.get("approved") for _, v in rows],
                ),
            )
