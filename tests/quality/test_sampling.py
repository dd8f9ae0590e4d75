"""Proof sampling end to end: agents send pages through the SDK and the real control service,
the sampler re-validates them in strict mode with the demo's Validator, freezes the Publisher
of the playbook that regressed, and the SDK's publish refuses while another playbook ships."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from _support.quality import HERO_ONLY_PAGE, post_proofs, sampling_config
from runledger.demo.validator import render_site
from runledger.exporter._collector import LedgerCollector
from runledger.exporter._config import ExporterConfig
from runledger.quality import load_quality_config, run_sample
from runledger.quality.sampling import sample_size
from runledger.sdk import CostOptions, Ledger, PublisherFrozen
from runledger.store import Database

CONFIG = sampling_config(5)
BROKEN = HERO_ONLY_PAGE.format(extra="")


def _ledger(make_ledger: Callable[..., Ledger], url: str, token: str) -> Ledger:
    return make_ledger(url, token, costs=CostOptions(enforce_tenant_cap=False))


def _ship(ledger: Ledger, tenant: str, playbook: str, n: int, page: Callable[[int], str]) -> None:
    """Build ``n`` projects' pages (Implementer) and ask their owners for proofs (Publisher)."""
    for i in range(n):
        project = f"{tenant}-p{i}"
        path = f"{project}/site/index.html"
        with ledger.run(tenant, project, "build", "implementer", playbook=playbook) as run:
            run.artifact_written(path, 1, content=page(i))
        with ledger.run(tenant, project, "publish", "publisher", playbook=playbook) as run:
            run.publish_done(path, 1)
            run.proof_requested(
                f"{project}-proof", due_at=datetime.now(UTC) + timedelta(hours=48),
                artifact_path=path, artifact_version=1,
            )  # fmt: skip
    assert ledger.flush(timeout=20), "the ledger did not take every event and snapshot"


def _publish(ledger: Ledger, tenant: str, playbook: str) -> Any:
    with ledger.run(tenant, f"{tenant}-next", "publish", "publisher", playbook=playbook) as run:
        try:
            run.publish_done(f"{tenant}-next/site/index.html", 2)
        except PublisherFrozen as frozen:
            run.partial(f"{tenant}-next/site/index.html", 2, missing="the whole release")
            return frozen
    return None


@pytest.mark.timeout(120)
def test_a_regressing_playbook_is_frozen_and_its_publisher_refused_while_another_ships(
    control_server: str,
    db_url: str,
    db: Database,
    make_tenant: Callable[..., str],
    make_token: Callable[..., str],
    make_ledger: Callable[..., Ledger],
    sql: Callable[..., list[tuple[Any, ...]]],
) -> None:
    make_tenant("acme")
    make_tenant("globex")
    acme = _ledger(make_ledger, control_server, make_token("agent", "acme"))
    globex = _ledger(make_ledger, control_server, make_token("agent", "globex"))
    rng = random.Random(3)
    # acme's local-business pages regress: 6 of 8 miss required sections.
    _ship(
        acme,
        "acme",
        "local-business",
        8,
        lambda i: BROKEN if i < 6 else render_site("local-business", "Acme", rng, flaw_rate=0),
    )
    _ship(globex, "globex", "saas-launch", 8,
          lambda i: render_site("saas-launch", "Globex", rng, flaw_rate=0))  # fmt: skip
    stored = sql("SELECT role, count(*) FROM artifact_snapshots GROUP BY role")
    assert stored == [("implementer", 16)]

    # Before sampling, nothing is frozen and the Publisher ships.
    assert _publish(acme, "acme", "local-business") is None

    report = run_sample(db, load_quality_config(CONFIG), datetime.now(UTC).date(), seed=11)
    by_playbook = {p.playbook: p for p in report.playbooks}
    landing, launch = by_playbook["local-business"], by_playbook["saas-launch"]
    assert (landing.sampled, landing.count("fail"), landing.count("pass")) == (8, 6, 2)
    assert landing.froze is not None
    assert "6 of 8 sampled proofs failed strict validation (75%, threshold 20%)" in (
        landing.froze.reason
    )
    # The reason every role can read names no tenant's artifact.
    assert "acme" not in landing.froze.reason and "/site/" not in landing.froze.reason
    assert (launch.sampled, launch.count("fail"), launch.froze) == (8, 0, None)

    # Results are stored per artifact, with the Validator's reason.
    rows = sql(
        "SELECT status, count(*) FROM quality_samples WHERE playbook = 'local-business'"
        " GROUP BY status ORDER BY status"
    )
    assert rows == [("fail", 6), ("pass", 2)]
    reasons = sql("SELECT DISTINCT reason FROM quality_samples WHERE status = 'fail'")
    assert reasons == [("missing required section(s): services, reviews, contact",)]
    audit = sql("SELECT actor, action, target FROM audit_log WHERE action = 'publisher.freeze'")
    assert audit == [("quality-sampler", "publisher.freeze", "local-business")]

    # The frozen playbook's Publisher is refused with the reason, and publishes partial.
    frozen = _publish(acme, "acme", "local-business")
    assert isinstance(frozen, PublisherFrozen)
    assert frozen.cap == "publish"
    assert "the Publisher of playbook local-business is frozen" in str(frozen)
    assert "6 of 8 sampled proofs failed" in str(frozen)
    assert frozen.freeze is not None and frozen.freeze["failure_rate"] == 0.75
    # ... while the other playbook is untouched.
    assert _publish(globex, "globex", "saas-launch") is None
    assert acme.flush(timeout=20) and globex.flush(timeout=20)
    published = sql(
        "SELECT tenant_id, payload->>'partial', payload->>'instructions' FROM events"
        " WHERE type = 'publish_done' AND project_id LIKE '%-next' ORDER BY seq"
    )
    assert published[0][:2] == ("acme", "false")  # before the freeze
    assert published[1][:2] == ("acme", "true")
    assert "runledger quality unfreeze local-business" in published[1][2]
    assert published[2][:2] == ("globex", "false")
    hits = sql("SELECT tenant_id, payload->>'cap' FROM events WHERE type = 'cap_hit'")
    assert hits == [("acme", "publish")]

    # The exporter's gauge and the quality gauges reflect it.
    collector = LedgerCollector(db, config=ExporterConfig())
    collector.refresh()
    samples = {
        (m.name, tuple(s.labels.values())): s.value for m in collector.collect() for s in m.samples
    }
    assert samples[("runledger_publisher_frozen", ("local-business",))] == 1
    assert samples[("runledger_quality_sample_failure_ratio", ("local-business",))] == 0.75
    assert samples[("runledger_quality_sample_failure_ratio", ("saas-launch",))] == 0.0
    assert ("runledger_quality_last_run_timestamp_seconds", ("sample",)) in samples

    # Why it froze, artifact by artifact, for admins (support too), never for owners.
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    owner = {"Authorization": f"Bearer {make_token('owner', 'acme')}"}
    why_url = f"{control_server}/v1/playbooks/local-business/quality"
    assert requests.get(why_url, headers=owner, timeout=5).status_code == 403
    why = requests.get(why_url, headers=admin, timeout=5).json()
    assert why["frozen"] is True and why["freeze"]["sampled"] == 8
    assert (why["sample"]["sampled"], why["sample"]["failed"]) == (8, 6)
    assert [r["status"] for r in why["sample"]["results"]] == ["fail"] * 6 + ["pass"] * 2
    assert why["sample"]["results"][0]["reason"] == (
        "missing required section(s): services, reviews, contact"
    )
    assert why["sample"]["results"][0]["artifact_path"] == "acme-p0/site/index.html"

    # An admin unfreezes with a reason (audited); the Publisher ships again.
    url = f"{control_server}/v1/playbooks/local-business/unfreeze"
    refused = requests.post(url, json={"reason": "fixed the template"}, headers=owner, timeout=5)
    assert refused.status_code == 403
    empty = requests.post(url, json={"reason": "  "}, headers=admin, timeout=5)
    assert empty.status_code == 400
    assert empty.json()["fields"][0]["field"] == "reason"
    done = requests.post(url, json={"reason": "fixed the template"}, headers=admin, timeout=5)
    assert done.status_code == 200, done.text
    assert done.json()["lifted"]["lift_reason"] == "fixed the template"
    again = requests.post(url, json={"reason": "twice"}, headers=admin, timeout=5)
    assert again.status_code == 409
    assert again.json()["error"] == "the Publisher of playbook 'local-business' is not frozen"
    audit = sql(
        "SELECT actor_role, details->>'reason' FROM audit_log WHERE action = 'publisher.unfreeze'"
    )
    assert audit == [("admin", "fixed the template")]
    assert _publish(acme, "acme", "local-business") is None
    collector.refresh()
    frozen_now = [
        s.value
        for m in collector.collect()
        if m.name == "runledger_publisher_frozen"
        for s in m.samples
    ]
    assert frozen_now == [0]

    # Sampling the same day again does not re-freeze what the admin lifted.
    again_report = run_sample(db, load_quality_config(CONFIG), datetime.now(UTC).date(), seed=11)
    landing = next(p for p in again_report.playbooks if p.playbook == "local-business")
    assert landing.over_threshold and landing.froze is None and landing.lifted_today is not None


def test_the_seed_makes_the_sample_deterministic_and_size_and_rate_bound_it(
    db: Database, sql: Callable[..., list[tuple[Any, ...]]], make_tenant: Callable[..., str],
    client: Any, make_token: Callable[..., str],
) -> None:  # fmt: skip
    make_tenant("acme")
    token = make_token("agent", "acme")
    post_proofs(client, token, "acme", "local-business", 30)
    day = datetime.now(UTC).date()
    config = load_quality_config({**CONFIG, "sample": {"rate": 0.2, "size": 50, "min_size": 3}})

    def picked(seed: int) -> list[str]:
        report = run_sample(db, config, day, seed=seed)
        return [r.proof_id for r in report.playbooks[0].results]

    first, same, other = picked(5), picked(5), picked(6)
    assert len(first) == 6  # 20% of 30
    assert first == same
    assert first != other
    small = run_sample(db, config, day, seed=5, size=4)
    assert small.playbooks[0].sampled == 4
    assert run_sample(db, config, day, seed=5, rate=1.0).playbooks[0].sampled == 30
    assert sample_size(2, config.sample) == 2  # never more than there are
    assert sample_size(10, config.sample) == 3  # at least min_size


def test_a_playbook_whose_proofs_start_failing_is_frozen_on_that_day(
    db: Database, client: Any, make_tenant: Callable[..., str], make_token: Callable[..., str],
) -> None:  # fmt: skip
    make_tenant("acme")
    token = make_token("agent", "acme")
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    config = load_quality_config(CONFIG)
    post_proofs(client, token, "acme", "local-business", 10, at=yesterday)
    post_proofs(client, token, "acme", "local-business", 10, at=today,
                page=lambda i: BROKEN if i % 2 else render_site(
                    "local-business", "Acme", random.Random(i), flaw_rate=0))  # fmt: skip
    before = run_sample(db, config, yesterday.date(), seed=1).playbooks[0]
    assert (before.sampled, before.count("fail"), before.froze) == (10, 0, None)
    after = run_sample(db, config, today.date(), seed=1).playbooks[0]
    assert (after.sampled, after.count("fail")) == (10, 5)
    assert after.froze is not None and after.froze.sample_date == today.date()
