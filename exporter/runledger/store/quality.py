"""Quality tables: artifact snapshots, sampled proofs, drift results, Publisher freezes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Literal

import orjson
import psycopg
from psycopg.rows import dict_row

from runledger.store._database import Database
from runledger.store.audit import record_audit
from runledger.store.tenants import known_tenants

__all__ = [
    "DriftRow",
    "FeatureTest",
    "Freeze",
    "ProofCandidate",
    "SampleResult",
    "SnapshotRow",
    "SnapshotStatus",
    "active_freeze",
    "active_freezes",
    "astuple_drift",
    "drift_report",
    "freeze_publisher",
    "latest_drift",
    "latest_samples",
    "lifted_for_day",
    "note_job_run",
    "output_features",
    "playbook_quality",
    "proofs_of_day",
    "quality_last_runs",
    "record_drift",
    "record_sample",
    "store_snapshots",
    "unfreeze_publisher",
]


SnapshotStatus = Literal["accepted", "duplicate", "unknown_tenant"]


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One redacted artifact content and its structure features, ready to store."""

    snapshot_id: str
    tenant_id: str
    project_id: str
    run_id: str
    playbook: str | None
    phase: str
    role: str
    artifact_path: str
    artifact_version: int
    media_type: str
    content: str
    features: dict[str, Any]
    created_at: datetime


def store_snapshots(db: Database, rows: Sequence[SnapshotRow]) -> list[SnapshotStatus]:
    """Store ``rows`` in one transaction; return each row's status, in order.

    A snapshot whose id, or whose artifact version, is already stored is a duplicate (an
    artifact version never changes: the first content stays).
    """
    with db.connection() as conn:
        known = known_tenants(conn, (row.tenant_id for row in rows))
        statuses: list[SnapshotStatus] = []
        for row in rows:
            if row.tenant_id not in known:
                statuses.append("unknown_tenant")
                continue
            params = asdict(row)
            params["features"] = orjson.dumps(row.features).decode()
            inserted = conn.execute(
                "INSERT INTO artifact_snapshots (snapshot_id, tenant_id, project_id, run_id,"
                " playbook, phase, role, artifact_path, artifact_version, media_type, content,"
                " features, created_at) VALUES (%(snapshot_id)s, %(tenant_id)s,"
                " %(project_id)s, %(run_id)s, %(playbook)s, %(phase)s, %(role)s,"
                " %(artifact_path)s, %(artifact_version)s, %(media_type)s, %(content)s,"
                " %(features)s::jsonb, %(created_at)s) ON CONFLICT DO NOTHING"
                " RETURNING snapshot_id",
                params,
            ).fetchone()
            statuses.append("accepted" if inserted else "duplicate")
    return statuses


# -- sampling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProofCandidate:
    """A proof requested on the sampled day, with its artifact's stored content if any."""

    proof_id: str
    tenant_id: str
    project_id: str
    playbook: str
    artifact_path: str | None
    artifact_version: int | None
    media_type: str | None
    content: str | None


# A proof's artifact is the one its proof_requested event names, else its run's last one.
_PROOFS_SQL = """
SELECT q.proof_id, q.tenant_id, q.project_id, q.playbook, q.path, q.version,
       s.media_type, s.content
FROM (
    SELECT DISTINCT ON (e.payload->>'proof_id')
           e.payload->>'proof_id' AS proof_id, e.tenant_id, e.project_id,
           COALESCE(e.playbook, p.playbook) AS playbook,
           COALESCE(e.artifact_path, r.artifact_path) AS path,
           CASE WHEN e.artifact_path IS NOT NULL THEN e.artifact_version
                ELSE r.artifact_version END AS version
    FROM events e
    LEFT JOIN runs r ON r.run_id = e.run_id
    LEFT JOIN projects p ON p.project_id = e.project_id
    WHERE e.type = 'proof_requested' AND e.occurred_at >= %(start)s AND e.occurred_at < %(end)s
    ORDER BY e.payload->>'proof_id', e.seq DESC
) q
LEFT JOIN artifact_snapshots s
       ON s.tenant_id = q.tenant_id AND s.project_id = q.project_id
      AND s.artifact_path = q.path AND s.artifact_version = q.version
WHERE q.playbook IS NOT NULL
ORDER BY q.playbook, q.proof_id
"""


def proofs_of_day(conn: psycopg.Connection, start: datetime, end: datetime) -> list[ProofCandidate]:
    """Return the proofs requested in ``[start, end)`` that belong to a playbook."""
    rows = conn.execute(_PROOFS_SQL, {"start": start, "end": end}).fetchall()
    return [ProofCandidate(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class SampleResult:
    """The Validator's strict verdict on one sampled proof."""

    proof_id: str
    tenant_id: str
    project_id: str
    artifact_path: str
    artifact_version: int
    status: str
    reason: str


def record_sample(
    conn: psycopg.Connection,
    *,
    day: date,
    playbook: str,
    validator: str,
    results: Sequence[SampleResult],
    summary: dict[str, Any],
) -> None:
    """Store one playbook's sample of ``day`` (replacing an earlier run of the same day)."""
    conn.execute(
        "DELETE FROM quality_samples WHERE sample_date = %s AND playbook = %s", (day, playbook)
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO quality_samples (sample_date, proof_id, playbook, tenant_id, project_id,"
            " artifact_path, artifact_version, status, reason, validator)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (sample_date, proof_id) DO UPDATE SET status = excluded.status,"
            " reason = excluded.reason, validator = excluded.validator, checked_at = now()",
            [
                (day, r.proof_id, playbook, r.tenant_id, r.project_id, r.artifact_path,
                 r.artifact_version, r.status, r.reason, validator)
                for r in results
            ],
        )  # fmt: skip
    conn.execute(
        "INSERT INTO quality_sample_runs (sample_date, playbook, proofs, eligible, sampled,"
        " failed, errors, failure_rate, threshold, froze) VALUES (%(day)s, %(playbook)s,"
        " %(proofs)s, %(eligible)s, %(sampled)s, %(failed)s, %(errors)s, %(failure_rate)s,"
        " %(threshold)s, %(froze)s) ON CONFLICT (sample_date, playbook) DO UPDATE SET"
        " proofs = excluded.proofs, eligible = excluded.eligible, sampled = excluded.sampled,"
        " failed = excluded.failed, errors = excluded.errors,"
        " failure_rate = excluded.failure_rate, threshold = excluded.threshold,"
        " froze = quality_sample_runs.froze OR excluded.froze, ran_at = now()",
        {"day": day, "playbook": playbook, **summary},
    )


# -- freezes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Freeze:
    """One Publisher freeze of a playbook."""

    freeze_id: int
    playbook: str
    reason: str
    frozen_by: str
    frozen_at: datetime
    sample_date: date | None = None
    sampled: int | None = None
    failed: int | None = None
    failure_rate: float | None = None
    threshold: float | None = None
    lifted_by: str | None = None
    lifted_at: datetime | None = None
    lift_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the freeze as JSON-ready values."""
        out = asdict(self)
        for key in ("frozen_at", "lifted_at", "sample_date"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


_FREEZE_COLUMNS = (
    "freeze_id, playbook, reason, frozen_by, frozen_at, sample_date, sampled, failed,"
    " failure_rate, threshold, lifted_by, lifted_at, lift_reason"
)


def active_freeze(conn: psycopg.Connection, playbook: str) -> Freeze | None:
    """Return the playbook's active freeze, if its Publisher is frozen."""
    row = conn.execute(
        f"SELECT {_FREEZE_COLUMNS} FROM publisher_freezes"
        " WHERE playbook = %s AND lifted_at IS NULL",
        (playbook,),
    ).fetchone()
    return Freeze(*row) if row else None


def active_freezes(conn: psycopg.Connection) -> list[Freeze]:
    """Return every playbook's active freeze, oldest first."""
    rows = conn.execute(
        f"SELECT {_FREEZE_COLUMNS} FROM publisher_freezes WHERE lifted_at IS NULL"
        " ORDER BY frozen_at, freeze_id"
    ).fetchall()
    return [Freeze(*row) for row in rows]


def lifted_for_day(conn: psycopg.Connection, playbook: str, day: date) -> Freeze | None:
    """Return a freeze of ``day``'s sample that an admin already lifted, if any."""
    row = conn.execute(
        f"SELECT {_FREEZE_COLUMNS} FROM publisher_freezes WHERE playbook = %s"
        " AND sample_date = %s AND lifted_at IS NOT NULL ORDER BY freeze_id DESC LIMIT 1",
        (playbook, day),
    ).fetchone()
    return Freeze(*row) if row else None


def freeze_publisher(
    conn: psycopg.Connection,
    *,
    playbook: str,
    reason: str,
    actor: str,
    day: date,
    sampled: int,
    failed: int,
    failure_rate: float,
    threshold: float,
) -> Freeze | None:
    """Freeze the playbook's Publisher (audited); None when it is frozen already."""
    row = conn.execute(
        "INSERT INTO publisher_freezes (playbook, reason, frozen_by, sample_date, sampled,"
        " failed, failure_rate, threshold) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (playbook) WHERE lifted_at IS NULL DO NOTHING RETURNING {_FREEZE_COLUMNS}",
        (playbook, reason, actor, day, sampled, failed, failure_rate, threshold),
    ).fetchone()
    if row is None:
        return None
    freeze = Freeze(*row)
    record_audit(
        conn, actor=actor, role="system", action="publisher.freeze", target=playbook,
        details={"freeze_id": freeze.freeze_id, "reason": reason, "sample_date": day.isoformat(),
                 "sampled": sampled, "failed": failed, "failure_rate": failure_rate,
                 "threshold": threshold},
    )  # fmt: skip
    return freeze


def unfreeze_publisher(
    conn: psycopg.Connection, *, playbook: str, actor: str, role: str, reason: str
) -> Freeze | None:
    """Lift the playbook's active freeze with ``reason`` (audited); None when not frozen."""
    row = conn.execute(
        "UPDATE publisher_freezes SET lifted_by = %s, lifted_at = now(), lift_reason = %s"
        f" WHERE playbook = %s AND lifted_at IS NULL RETURNING {_FREEZE_COLUMNS}",
        (actor, reason, playbook),
    ).fetchone()
    if row is None:
        return None
    freeze = Freeze(*row)
    record_audit(
        conn, actor=actor, role=role, action="publisher.unfreeze", target=playbook,
        details={"freeze_id": freeze.freeze_id, "reason": reason,
                 "frozen_reason": freeze.reason},
    )  # fmt: skip
    return freeze


# -- drift ------------------------------------------------------------------------------------


def output_features(
    conn: psycopg.Connection, *, role: str, start: datetime, end: datetime
) -> list[tuple[str, datetime, dict[str, Any]]]:
    """Return (playbook, created_at, features) of the role's outputs stored for ``[start, end)``."""
    rows = conn.execute(
        "SELECT playbook, created_at, features FROM artifact_snapshots"
        " WHERE role = %s AND playbook IS NOT NULL AND created_at >= %s AND created_at < %s",
        (role, start, end),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


@dataclass(frozen=True, slots=True)
class FeatureTest:
    """One two-sample test of one feature of one playbook (before correction)."""

    playbook: str
    feature: str
    kind: str
    test: str
    baseline_n: int
    today_n: int
    baseline_value: float
    today_value: float
    statistic: float
    p_value: float


@dataclass(frozen=True, slots=True)
class DriftRow(FeatureTest):
    """One playbook feature's test result in a drift check: the test, corrected."""

    adjusted_p: float
    drifted: bool
    summary: str


def record_drift(conn: psycopg.Connection, day: date, rows: Sequence[DriftRow]) -> None:
    """Replace the drift results of ``day`` with ``rows``."""
    conn.execute("DELETE FROM quality_drift WHERE check_date = %s", (day,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO quality_drift (check_date, playbook, feature, kind, test, baseline_n,"
            " today_n, baseline_value, today_value, statistic, p_value, adjusted_p, drifted,"
            " summary) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(day, *astuple_drift(r)) for r in rows],
        )


def astuple_drift(row: DriftRow) -> tuple[Any, ...]:
    """Return a drift row's values in the table's column order (after the check date)."""
    return (
        row.playbook, row.feature, row.kind, row.test, row.baseline_n, row.today_n,
        row.baseline_value, row.today_value, row.statistic, row.p_value, row.adjusted_p,
        row.drifted, row.summary,
    )  # fmt: skip


# -- what the exporter reads ------------------------------------------------------------------


def latest_drift(conn: psycopg.Connection) -> list[tuple[str, str, bool, float, float, float]]:
    """Return per playbook and feature kind of the latest check: drifted, smallest adjusted p,
    and the today/baseline ratio of the most significant test of that kind."""
    return conn.execute(
        """
        SELECT DISTINCT ON (playbook, kind) playbook, kind,
               bool_or(drifted) OVER (PARTITION BY playbook, kind), adjusted_p,
               today_value, baseline_value
        FROM quality_drift
        WHERE check_date = (SELECT max(check_date) FROM quality_drift)
        ORDER BY playbook, kind, adjusted_p, feature
        """
    ).fetchall()


def latest_samples(conn: psycopg.Connection) -> list[tuple[str, int, int, float | None]]:
    """Return per playbook its latest sample: sampled, failed, failure rate."""
    return conn.execute(
        "SELECT DISTINCT ON (playbook) playbook, sampled, failed, failure_rate"
        " FROM quality_sample_runs ORDER BY playbook, sample_date DESC"
    ).fetchall()


def note_job_run(conn: psycopg.Connection, job: str, day: date) -> None:
    """Record that the quality ``job`` (sample or drift) finished for ``day`` just now."""
    conn.execute(
        "INSERT INTO quality_job_runs (job, day) VALUES (%s, %s) ON CONFLICT (job) DO UPDATE"
        " SET day = excluded.day, ran_at = now()",
        (job, day),
    )


def quality_last_runs(conn: psycopg.Connection) -> dict[str, datetime]:
    """Return when the sample and drift jobs last finished."""
    return {job: at for job, at in conn.execute("SELECT job, ran_at FROM quality_job_runs")}


def playbook_quality(conn: psycopg.Connection, playbook: str) -> dict[str, Any]:
    """Return the playbook's latest sample (totals and every sampled artifact's verdict) and
    the tests of its latest drift check: what an admin reads to see why it froze."""
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(
            "SELECT sample_date, proofs, eligible, sampled, failed, errors, failure_rate,"
            " threshold, froze, ran_at FROM quality_sample_runs WHERE playbook = %s"
            " ORDER BY sample_date DESC LIMIT 1",
            (playbook,),
        ).fetchone()
        results = []
        if run is not None:
            results = cur.execute(
                "SELECT proof_id, tenant_id, project_id, artifact_path, artifact_version, status,"
                " reason, validator FROM quality_samples WHERE playbook = %s AND sample_date = %s"
                " ORDER BY status <> 'fail', status <> 'error', proof_id",
                (playbook, run["sample_date"]),
            ).fetchall()
        drift = cur.execute(
            "SELECT check_date, feature, kind, test, baseline_n, today_n, baseline_value,"
            " today_value, statistic, p_value, adjusted_p, drifted, summary FROM quality_drift"
            " WHERE playbook = %s AND check_date = (SELECT max(check_date) FROM quality_drift"
            " WHERE playbook = %s) ORDER BY adjusted_p, feature",
            (playbook, playbook),
        ).fetchall()
    return {"sample": {**run, "results": results} if run else None, "drift": drift}


def drift_report(conn: psycopg.Connection, day: date) -> list[dict[str, Any]]:
    """Return the stored drift results of ``day``, most significant first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM quality_drift WHERE check_date = %s ORDER BY adjusted_p, playbook,"
            " feature",
            (day,),
        ).fetchall()
