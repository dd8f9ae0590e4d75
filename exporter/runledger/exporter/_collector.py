"""Scrape-time gauges computed from PostgreSQL, cached between background refreshes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runledger.exporter._config import ExporterConfig
from runledger.store import Database, gauges
from runledger.store import quality as quality_store
from runledger.store.event_tail import last_seq

__all__ = ["LedgerCollector", "LedgerSnapshot"]


@dataclass
class LedgerSnapshot:
    """The gauges of one refresh, as of ``taken_at``."""

    taken_at: datetime
    tenants: list[tuple[str, bool, float, float, bool, float, int]] = field(default_factory=list)
    projected: dict[str, float] = field(default_factory=dict)
    stuck: dict[tuple[str, str], int] = field(default_factory=dict)
    active_runs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    frozen: dict[str, int] = field(default_factory=dict)
    judgements: dict[tuple[str, str], int] = field(default_factory=dict)
    drift: list[tuple[str, str, bool, float, float, float]] = field(default_factory=list)
    samples: list[tuple[str, int, int, float | None]] = field(default_factory=list)
    quality_runs: dict[str, datetime] = field(default_factory=dict)
    max_seq: int = 0


def projected_spend(spent: float, burn: float, now: datetime, burn_window: float) -> float:
    """Return today's spend plus the trailing window's burn rate until the end of the UTC day."""
    day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
    window_start = max(now - timedelta(seconds=burn_window), day_start)
    elapsed = (now - window_start).total_seconds()
    remaining = (day_start + timedelta(days=1) - now).total_seconds()
    if elapsed <= 0:
        return spent
    return spent + burn / elapsed * remaining


class LedgerCollector(Collector):
    """Yield fresh gauge families from the last snapshot; ``refresh`` takes a new one.

    Scrapes never touch the database: a background loop calls ``refresh`` every
    ``gauge_refresh_seconds``, so a gauge is at most that old (plus one refresh query) and a
    scrape still answers while PostgreSQL is down.

    Args:
        db: the ledger database.
        config: exporter settings (stuck threshold, burn window).
        registry: registered here when given.
    """

    def __init__(
        self,
        db: Database,
        *,
        config: ExporterConfig,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self._snapshot: LedgerSnapshot | None = None
        self._lock = threading.Lock()
        # Label sets once seen keep reporting (at zero) so a cleared queue or a lifted
        # freeze shows as 0 rather than a vanished series.
        self._seen_active: set[tuple[str, str]] = set()
        self._seen_stuck: set[tuple[str, str]] = set()
        self._seen_frozen: set[str] = set()
        if registry is not None:
            registry.register(self)

    @property
    def snapshot(self) -> LedgerSnapshot | None:
        """Return the last snapshot, or None before the first successful refresh."""
        return self._snapshot

    def refresh(self, now: datetime | None = None) -> LedgerSnapshot:
        """Query the ledger and replace the snapshot.

        Raises:
            DatabaseUnavailable: the ledger could not be read; the old snapshot stays.
        """
        now = now or datetime.now(UTC)
        day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        burn_start = max(now - timedelta(seconds=self.config.burn_window_seconds), day_start)
        snap = LedgerSnapshot(taken_at=now)
        with self.db.connection() as conn:
            for row in gauges.tenants_today(conn, now=now, burn_start=burn_start):
                tenant, paused, cap, spent, blocked, burn, overdue = row
                snap.tenants.append(
                    (tenant, bool(paused), float(cap), float(spent), bool(blocked),
                     float(burn), int(overdue))
                )  # fmt: skip
                snap.projected[tenant] = projected_spend(
                    float(spent), float(burn), now, self.config.burn_window_seconds
                )
            stuck_before = now - timedelta(seconds=self.config.stuck_after_seconds)
            for tenant, phase, count in gauges.stuck_projects(conn, stuck_before=stuck_before):
                snap.stuck[(tenant, phase)] = int(count)
            for tenant, role, status, count in gauges.active_runs(conn):
                snap.active_runs[(tenant, role, status)] = int(count)
            snap.frozen = dict.fromkeys(gauges.frozen_playbooks(conn), 1)
            snap.judgements = gauges.alert_judgements(conn)
            snap.drift = quality_store.latest_drift(conn)
            snap.samples = quality_store.latest_samples(conn)
            snap.quality_runs = quality_store.quality_last_runs(conn)
            snap.max_seq = last_seq(conn)
        with self._lock:
            self._seen_active |= {(t, r) for t, r, _ in snap.active_runs}
            self._seen_stuck |= set(snap.stuck)
            self._seen_frozen |= set(snap.frozen)
            self._snapshot = snap
        return snap

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges of the last snapshot (nothing before the first refresh)."""
        with self._lock:
            snap = self._snapshot
            seen_active = sorted(self._seen_active)
            seen_stuck = sorted(self._seen_stuck)
            seen_frozen = sorted(self._seen_frozen)
        if snap is None:
            return
        tenant = ["tenant"]
        spend = GaugeMetricFamily(
            "runledger_tenant_spend_today_usd",
            "Spend of the tenant in the current UTC day, from the ledger, in US dollars.",
            labels=tenant,
        )
        cap = GaugeMetricFamily(
            "runledger_tenant_daily_cap_usd",
            "Daily spend cap of the tenant for the current UTC day, in US dollars.",
            labels=tenant,
        )
        projected = GaugeMetricFamily(
            "runledger_tenant_projected_spend_today_usd",
            "Spend the tenant reaches by the end of the UTC day at the current burn rate,"
            " in US dollars.",
            labels=tenant,
        )
        blocked = GaugeMetricFamily(
            "runledger_tenant_blocked",
            "1 while the tenant is blocked today (spend reached the cap, or a refused lease "
            "request has not been freed for since), else 0 (a boolean).",
            labels=tenant,
        )
        paused = GaugeMetricFamily(
            "runledger_tenant_paused",
            "1 when an admin paused the tenant, else 0 (a boolean).",
            labels=tenant,
        )
        overdue = GaugeMetricFamily(
            "runledger_proofs_overdue",
            "Proofs past their due time without an answer, in proofs.",
            labels=tenant,
        )
        for name, is_paused, cap_usd, spent, is_blocked, _burn, n_overdue in snap.tenants:
            spend.add_metric([name], spent)
            cap.add_metric([name], cap_usd)
            projected.add_metric([name], snap.projected[name])
            blocked.add_metric([name], 1.0 if is_blocked else 0.0)
            paused.add_metric([name], 1.0 if is_paused else 0.0)
            overdue.add_metric([name], n_overdue)
        yield from (spend, cap, projected, blocked, paused, overdue)

        stuck = GaugeMetricFamily(
            "runledger_stuck_projects",
            "Projects in a phase without advancing for longer than the stuck threshold,"
            " in projects.",
            labels=["tenant", "phase"],
        )
        for key in seen_stuck:
            stuck.add_metric(list(key), snap.stuck.get(key, 0))
        yield stuck

        active = GaugeMetricFamily(
            "runledger_active_runs",
            "Runs waiting in the queue (status queued) or running, in runs.",
            labels=["tenant", "role", "status"],
        )
        for t, r in seen_active:
            for status in ("queued", "running"):
                active.add_metric([t, r, status], snap.active_runs.get((t, r, status), 0))
        yield active

        frozen = GaugeMetricFamily(
            "runledger_publisher_frozen",
            "1 while quality sampling has frozen the Publisher of the playbook, else 0"
            " (a boolean).",
            labels=["playbook"],
        )
        for playbook in seen_frozen:
            frozen.add_metric([playbook], snap.frozen.get(playbook, 0))
        yield frozen

        yield from _quality_families(snap)

        refreshed = GaugeMetricFamily(
            "runledger_exporter_gauges_refreshed_timestamp_seconds",
            "Unix time as of which the ledger gauges of this scrape were computed, in seconds.",
        )
        refreshed.add_metric([], snap.taken_at.timestamp())
        yield refreshed

        judgements = CounterMetricFamily(
            "runledger_alert_judgements",
            "Fired alerts judged true or false positive (POST /v1/alerts/outcomes), by alert"
            " name, in alerts.",
            labels=["alertname", "status"],
        )
        # Both outcomes of every judged alert, so its precision exists from its first judgement.
        for name in sorted({name for name, _ in snap.judgements}):
            for outcome in ("true_positive", "false_positive"):
                judgements.add_metric([name, outcome], snap.judgements.get((name, outcome), 0))
        yield judgements

    def describe(self) -> Iterator[Metric]:
        """Describe nothing: the families are created per scrape (unchecked collector)."""
        return iter(())


def _quality_families(snap: LedgerSnapshot) -> Iterator[Metric]:
    """Yield the quality gauges: the latest drift check and proof sample per playbook."""
    labels = ["playbook", "feature"]
    drifted = GaugeMetricFamily(
        "runledger_quality_drift_detected",
        "1 when the latest drift check found the playbook's Implementer outputs changed in this"
        " feature (after the multiple-comparison correction), else 0 (a boolean).",
        labels=labels,
    )
    p_value = GaugeMetricFamily(
        "runledger_quality_drift_adjusted_p_value",
        "Smallest corrected p-value of the feature's tests in the latest drift check, as a ratio.",
        labels=labels,
    )
    change = GaugeMetricFamily(
        "runledger_quality_drift_change_ratio",
        "Today's value over the baseline's of the feature's most significant test (median, or"
        " share of outputs with a section or key) in the latest drift check, as a ratio.",
        labels=labels,
    )
    for playbook, kind, is_drifted, adjusted, today, baseline in snap.drift:
        drifted.add_metric([playbook, kind], 1.0 if is_drifted else 0.0)
        p_value.add_metric([playbook, kind], float(adjusted))
        if baseline:
            change.add_metric([playbook, kind], float(today) / float(baseline))
    yield from (drifted, p_value, change)

    sampled = GaugeMetricFamily(
        "runledger_quality_sampled_proofs",
        "Proofs of the playbook re-validated in strict mode by the latest sample, in proofs.",
        labels=["playbook"],
    )
    failure = GaugeMetricFamily(
        "runledger_quality_sample_failure_ratio",
        "Share of the latest sample's validated proofs that failed strict validation, as a ratio.",
        labels=["playbook"],
    )
    for playbook, n_sampled, _failed, rate in snap.samples:
        sampled.add_metric([playbook], n_sampled)
        if rate is not None:
            failure.add_metric([playbook], float(rate))
    yield from (sampled, failure)

    last = GaugeMetricFamily(
        "runledger_quality_last_run_timestamp_seconds",
        "Unix time the quality job (check sample or drift) last stored results, in seconds.",
        labels=["check"],
    )
    for check, at in sorted(snap.quality_runs.items()):
        last.add_metric([check], at.timestamp())
    yield last
