"""The daily jobs on a schedule (APScheduler): proof sampling, drift check, retention.

``runledger quality scheduler`` runs them in one process (``runledger up`` starts it); in
production, cron or a Kubernetes CronJob can run the same commands instead
(docs/operations.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from runledger.quality.config import QualityConfig

__all__ = ["JOBS", "build_scheduler", "run_job"]

log = logging.getLogger("runledger.quality")

JOBS = ("sample", "drift", "retention")


def _today() -> date:
    return datetime.now(UTC).date()


def run_job(name: str, url: str, config: QualityConfig) -> str:
    """Run one daily job now against the ledger at ``url``; return a one-line summary."""
    if name == "retention":
        from runledger.store.retention import retention_days_from_env, run_retention

        report = run_retention(url, days=retention_days_from_env())
        return (
            f"retention: dropped {len(report.dropped_partitions)} partition(s), rolled up "
            f"{len(report.rolled_up_days)} day(s)"
        )
    from runledger.store import Database

    db = Database(url, max_size=2).open(wait=True)
    try:
        if name == "sample":
            from runledger.quality.sampling import run_sample

            sample = run_sample(db, config, _today())
            froze = [p.playbook for p in sample.playbooks if p.froze is not None]
            return (
                f"sample: {len(sample.playbooks)} playbook(s) sampled, "
                f"{sum(p.sampled for p in sample.playbooks)} proofs validated; froze "
                f"{', '.join(froze) or 'none'}"
            )
        if name == "drift":
            from runledger.quality.drift import run_drift

            drift = run_drift(db, config.drift, _today())
            return (
                f"drift: {len(drift.rows)} test(s), {len(drift.drifted)} drifted, "
                f"{len(drift.skipped)} playbook(s) without enough outputs"
            )
    finally:
        db.close()
    raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOBS)}")


def _safe(name: str, url: str, config: QualityConfig) -> Callable[[], None]:
    def job() -> None:
        try:
            log.info("%s", run_job(name, url, config))
        except Exception:
            # One failed day must not stop the scheduler: the next run tries again, and
            # QualityChecksNotRunning fires when results stop arriving.
            log.exception("runledger: the %s job failed", name)

    return job


def build_scheduler(url: str, config: QualityConfig, *, blocking: bool = True) -> Any:
    """Return an APScheduler scheduler with the three daily jobs on their cron schedules (UTC)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    scheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=UTC)
    for name in JOBS:
        expr = getattr(config.schedule, name)
        scheduler.add_job(
            _safe(name, url, config),
            CronTrigger.from_crontab(expr, timezone=UTC),
            id=name,
            name=f"runledger {name}",
            coalesce=True,  # runs held up (a busy or suspended process) run once, not many times
            max_instances=1,
            misfire_grace_time=3600,
        )
    return scheduler
