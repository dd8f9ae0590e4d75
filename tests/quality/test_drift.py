"""Drift checks: synthetic drift is found and described; a stable distribution rarely alarms."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from _support.exporter import run_promtool
from runledger.cli import main
from runledger.demo.validator import render_site
from runledger.exporter._collector import LedgerCollector
from runledger.exporter._config import ExporterConfig
from runledger.quality import adjust_pvalues, check_drift, features, run_drift
from runledger.quality.config import DriftSettings
from runledger.store import Database

SETTINGS = DriftSettings(baseline_days=7, min_baseline=30, min_today=10, false_alarm_rate=0.01)


def _post(client: Any, token: str, tenant: str, playbook: str, pages: list[tuple[datetime, str]]):
    auth = {"Authorization": f"Bearer {token}"}
    records = [
        {
            "snapshot_id": str(uuid.uuid4()),
            "tenant_id": tenant,
            "project_id": f"{tenant}-{uuid.uuid4().hex[:12]}",
            "run_id": f"run-{i}",
            "playbook": playbook,
            "phase": "build",
            "role": "implementer",
            "artifact_path": "site/index.html",
            "artifact_version": 1,
            "content": page,
            "created_at": at.isoformat(),
        }
        for i, (at, page) in enumerate(pages)
    ]
    resp = client.post("/v1/artifacts", json={"records": records}, headers=auth)
    assert resp.status_code == 200 and resp.json["accepted"] == len(pages), resp.json


def _pages(
    rng: random.Random, playbook: str, n: int, day: datetime, *, days_back: int = 0, **kw: Any
) -> list[tuple[datetime, str]]:
    out = []
    for i in range(n):
        at = day - timedelta(days=(i % days_back) + 1) if days_back else day
        out.append((at + timedelta(minutes=i), render_site(playbook, "Acme", rng, **kw)))
    return out


@pytest.fixture
def today() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def test_outputs_twice_as_long_and_a_missing_section_are_detected_and_described(
    client: Any, db: Database, make_tenant: Callable[..., str], make_token: Callable[..., str],
    sql: Callable[..., list[tuple[Any, ...]]], today: datetime,
) -> None:  # fmt: skip
    make_tenant("acme")
    token = make_token("agent", "acme")
    rng = random.Random(42)
    kw = {"flaw_rate": 0.0}
    # Three playbooks, a week of baseline each; today one's pages are twice as long (more
    # copy per section), one drops a section from every page, one stays as it was.
    for playbook in ("local-business", "saas-launch", "events"):
        _post(client, token, "acme", playbook, _pages(rng, playbook, 60, today, days_back=7, **kw))
    _post(
        client,
        token,
        "acme",
        "local-business",
        _pages(rng, "local-business", 20, today, length_factor=2.3, **kw),
    )
    no_pricing = [
        (at, page.replace(page[page.index('<section id="pricing">'):page.index(
            "</section>", page.index('<section id="pricing">')) + len("</section>")], ""))
        for at, page in _pages(rng, "saas-launch", 20, today, **kw)
    ]  # fmt: skip
    _post(client, token, "acme", "saas-launch", no_pricing)
    _post(client, token, "acme", "events", _pages(rng, "events", 20, today, **kw))

    report = run_drift(db, SETTINGS, today.date())
    drifted = {(r.playbook, r.feature) for r in report.drifted}
    assert ("local-business", "length") in drifted
    assert ("saas-launch", "section:pricing") in drifted
    assert ("saas-launch", "sections") in drifted
    assert not [f for p, f in drifted if p == "events"], report.drifted
    length = next(r for r in report.rows if (r.playbook, r.feature) == ("local-business", "length"))
    assert 1.6 < length.today_value / length.baseline_value < 2.5
    assert f"(x{length.today_value / length.baseline_value:.2f})" in length.summary
    pricing = next(r for r in report.rows if r.feature == "section:pricing")
    assert (pricing.baseline_value, pricing.today_value) == (1.0, 0.0)
    assert pricing.summary.startswith(
        "section 'pricing': in 100% of baseline outputs -> 0% today; Fisher adjusted p="
    )
    # Stored, and what the exporter reads.
    stored = sql(
        "SELECT playbook, feature, drifted FROM quality_drift WHERE check_date = %s AND drifted"
        " ORDER BY playbook, feature",
        today.date(),
    )
    assert {(p, f) for p, f, _ in stored} == drifted

    # The exporter serves the verdicts per playbook and bounded feature kind.
    collector = LedgerCollector(db, config=ExporterConfig())
    collector.refresh()
    registry = CollectorRegistry()
    registry.register(collector)
    exposition = generate_latest(registry).decode()
    assert (
        'runledger_quality_drift_detected{feature="section_presence",playbook="saas-launch"} 1.0'
        in exposition
    )
    assert 'runledger_quality_drift_detected{feature="length",playbook="events"} 0.0' in (
        exposition
    )
    ratio = re.search(
        r'runledger_quality_drift_change_ratio\{feature="length",playbook="local-business"\} (\S+)',
        exposition,
    )
    assert ratio and 1.6 < float(ratio.group(1)) < 2.5
    checked = run_promtool("check", "metrics", stdin=exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The CLI prints the report: what changed and by how much.
    result = CliRunner().invoke(
        main, ["quality", "drift", "--day", today.date().isoformat()],
        env={"RUNLEDGER_DATABASE_URL": db.url, "RUNLEDGER_QUALITY_CONFIG": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    print(result.output)  # the report, in the test log (-s)
    assert "DRIFT local-business: length: median" in result.output
    assert "DRIFT saas-launch: section 'pricing': in 100% of baseline outputs -> 0% today" in (
        result.output
    )
    assert "ok    events: no drift in" in result.output


def test_too_few_outputs_are_skipped_with_the_reason(
    client: Any, db: Database, make_tenant: Callable[..., str], make_token: Callable[..., str],
    today: datetime,
) -> None:  # fmt: skip
    make_tenant("acme")
    rng = random.Random(1)
    _post(client, make_token("agent", "acme"), "acme", "local-business",
          _pages(rng, "local-business", 12, today, days_back=3))  # fmt: skip
    report = run_drift(db, SETTINGS, today.date())
    assert report.rows == []
    assert report.skipped == {
        "local-business": "12 baseline and 0 outputs today; the check needs at least 30 and 10"
    }


@pytest.mark.timeout(60)
def test_a_stable_distribution_resampled_100_times_stays_within_the_false_alarm_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(2026)
    pools = {
        pb: [features(render_site(pb, "Acme", rng)) for _ in range(400)]
        for pb in ("local-business", "saas-launch")
    }
    settings = DriftSettings(min_baseline=30, min_today=10, false_alarm_rate=0.05)
    alarms, uncorrected, tests = 0, 0, 0
    for _ in range(100):
        groups = {
            pb: (rng.choices(pool, k=60), rng.choices(pool, k=20)) for pb, pool in pools.items()
        }
        rows = check_drift(groups, settings)
        tests += len(rows)
        alarms += any(r.drifted for r in rows)
        uncorrected += any(r.p_value <= settings.false_alarm_rate for r in rows)
    rate = alarms / 100
    with capsys.disabled():
        print(
            f"\nstable distribution, 100 checks of {tests // 100} tests each (2 playbooks): "
            f"{alarms} alarmed, observed false-alarm rate {rate:.2f} (configured "
            f"{settings.false_alarm_rate}); without the correction {uncorrected / 100:.2f}"
        )
    assert tests >= 100 * 10  # the checks did test every feature
    assert rate <= settings.false_alarm_rate


def test_corrections_match_their_definitions() -> None:
    ps = [0.01, 0.04, 0.03, 0.02]
    assert adjust_pvalues(ps, "bh") == pytest.approx([0.04, 0.04, 0.04, 0.04])
    assert adjust_pvalues(ps, "holm") == pytest.approx([0.04, 0.06, 0.06, 0.06])
    by = adjust_pvalues(ps, "by")
    assert by == pytest.approx([0.04 * (1 + 1 / 2 + 1 / 3 + 1 / 4)] * 4)
    assert adjust_pvalues([], "bh") == []
    with pytest.raises(ValueError, match="unknown correction 'x'; expected bh, by or holm"):
        adjust_pvalues([0.1], "x")


def test_holm_correction_is_used_when_configured() -> None:
    rng = random.Random(5)
    base = [features(render_site("saas-launch", "A", rng, flaw_rate=0)) for _ in range(40)]
    long = [
        features(render_site("saas-launch", "A", rng, flaw_rate=0, length_factor=3))
        for _ in range(15)
    ]
    rows = check_drift(
        {"saas-launch": (base, long)},
        DriftSettings(min_baseline=30, min_today=10, correction="holm"),
    )
    length = next(r for r in rows if r.feature == "length")
    assert length.drifted
    assert length.adjusted_p == pytest.approx(min(1.0, length.p_value * len(rows)))
