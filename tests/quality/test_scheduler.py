"""The daily jobs' schedule (APScheduler) and what each job does when it runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runledger.quality import load_quality_config
from runledger.quality.scheduler import JOBS, build_scheduler, run_job

CONFIG = {
    "validator": "runledger.demo.validator:validate",
    "schedule": {"sample": "50 23 * * *", "drift": "55 23 * * *", "retention": "15 0 * * *"},
}


def test_the_scheduler_holds_the_three_daily_jobs_on_their_cron_times(db_url: str) -> None:
    scheduler = build_scheduler(db_url, load_quality_config(CONFIG), blocking=False)
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == set(JOBS)
        now = datetime.now(UTC)
        for name, (hour, minute) in {"sample": (23, 50), "drift": (23, 55),
                                     "retention": (0, 15)}.items():  # fmt: skip
            nxt = jobs[name].trigger.get_next_fire_time(None, now)
            assert (nxt.hour, nxt.minute) == (hour, minute)
            assert nxt.utcoffset() == timedelta(0)
            assert timedelta(0) < nxt - now <= timedelta(days=1)
    finally:
        scheduler.shutdown(wait=False)


@pytest.mark.timeout(60)
def test_a_due_job_runs_and_records_its_run_even_with_nothing_to_check(
    db_url: str, sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    scheduler = build_scheduler(db_url, load_quality_config(CONFIG), blocking=False)
    scheduler.start()
    try:
        scheduler.modify_job("sample", next_run_time=datetime.now(UTC))
        scheduler.modify_job("drift", next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = {job for (job,) in sql("SELECT job FROM quality_job_runs")}
            if done == {"sample", "drift"}:
                break
            time.sleep(0.2)
        assert done == {"sample", "drift"}
    finally:
        scheduler.shutdown(wait=True)


def test_retention_deletes_artifact_contents_older_than_the_window(
    client: Any, db_url: str, make_tenant: Callable[..., str], make_token: Callable[..., str],
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:  # fmt: skip
    make_tenant("acme")
    now = datetime.now(UTC)
    records = [
        {"snapshot_id": str(uuid.uuid4()), "tenant_id": "acme", "project_id": f"p{age}",
         "run_id": "r", "phase": "build", "role": "implementer", "artifact_path": "a.md",
         "artifact_version": 1, "content": "# old\n",
         "created_at": (now - timedelta(days=age)).isoformat()}
        for age in (40, 2)
    ]  # fmt: skip
    auth = {"Authorization": f"Bearer {make_token('agent', 'acme')}"}
    assert (
        client.post("/v1/artifacts", json={"records": records}, headers=auth).json["accepted"] == 2
    )
    summary = run_job("retention", db_url, load_quality_config(CONFIG))
    assert summary.startswith("retention: dropped ")
    assert sql("SELECT project_id FROM artifact_snapshots") == [("p2",)]
