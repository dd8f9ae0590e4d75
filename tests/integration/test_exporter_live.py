"""The real exporter, control service and Prometheus against a workload sent through the API.

Two identical rounds of a deterministic workload are posted to the control service with
agent tokens. Round 1 creates every series; round 2, sent once round 1's first samples
have left the rule window, moves them. Then every exported series, every ledger gauge and
every recording rule is compared with the figures computed directly from PostgreSQL.

Judged alerts go through the product: the control service receives fired alerts on its
Alertmanager webhook and an admin judges them (``POST /v1/alerts/outcomes``). The other
inputs of the exporter that are not events go through the product too: after round 1 an
admin pauses a tenant (``POST /v1/tenants/<id>/pause``), agents store their pages
(``POST /v1/artifacts``) and the daily proof-sampling job (the scheduler's ``sample`` job,
with the demo's Validator) re-validates round 1's proofs and freezes the Publisher of the
playbook that fails; ``test_exporter_reads_what_pausing_sampling_and_judging_wrote`` checks
what the exporter makes of them.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from psycopg.rows import dict_row

from _support import free_port, stop_process
from _support.alerting import WEBHOOK_TOKEN, judge_alerts
from _support.exporter import (
    ALLOWED_LABELS,
    PROM_DIR,
    ROOT,
    Prometheus,
    max_seq,
    post_events,
    run_promtool,
    start_control,
    start_exporter,
    start_prometheus,
    write_prometheus_config,
)
from _support.quality import HERO_ONLY_PAGE, sampling_config
from _support.workload import (
    DEFAULT_TARGET,
    PHASE_TARGETS,
    TENANT_CAPS,
    Labels,
    Series,
    expected_metrics,
    trace_of,
    workload,
)
from runledger.quality import load_quality_config
from runledger.quality.scheduler import run_job
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

WINDOW = 60  # seconds: every range window of the rules, in the test Prometheus
ROUND_GAP = 12  # seconds between round 1 being scraped and round 2 being sent
STUCK_AFTER = 172_800
BURN_WINDOW = 3600

pytestmark = pytest.mark.timeout(240)


@dataclass
class Snapshot:
    """What the scenario observed, at one query time ``at``."""

    at: float
    db_url: str
    prom: Prometheus
    exporter_url: str
    control_url: str
    started: float
    boundary_seq: int
    posted: dict[str, int]
    rows: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, dict[Labels, float]] = field(default_factory=dict)
    rules: dict[str, dict[Labels, float]] = field(default_factory=dict)
    windows: dict[str, tuple[float, dict[Labels, list[tuple[float, float]]]]] = field(
        default_factory=dict
    )
    """For each single rate or increase rule: when Prometheus last evaluated it, and the raw
    samples that evaluation read."""
    judgements_all: dict[str, int] = field(default_factory=dict)
    judgements_round2: dict[str, int] = field(default_factory=dict)
    sample_job: str = ""
    """What the scheduler's proof-sampling job reported."""
    sampled_at: tuple[float, float] = (0.0, 0.0)
    """When the sampling job started and ended (Unix seconds)."""
    freezes: list[dict[str, Any]] = field(default_factory=list)


def _labels(metric: dict[str, str]) -> Labels:
    return frozenset((k, v) for k, v in metric.items() if k not in ("__name__", "job", "instance"))


JUDGED = "TenantDailyCapNearlyReached"
QUALITY = sampling_config(3)
BROKEN = {"acme-p1-r1", "initech-p1-r1"}
"""Round 1's projects whose published page still holds placeholder text: strict validation
fails them (2 of the 3 proofs of playbook ``web``)."""


def _store_pages(base: str, tokens: dict[str, str], sent: dict[str, list[list[dict[str, Any]]]]
                 ) -> int:  # fmt: skip
    """Store, as the agents' SDK does, the content of the page each project of ``sent``
    published (``site/index.html`` version 2, written by the Implementer)."""
    stored = 0
    for tenant, batches in sent.items():
        records = [
            {"snapshot_id": str(uuid.uuid4()), "tenant_id": tenant, "project_id": e["project_id"],
             "run_id": e["run_id"], "playbook": e["playbook"], "phase": e["phase"],
             "role": e["role"], "artifact_path": e["artifact_path"],
             "artifact_version": e["artifact_version"], "media_type": "text/html",
             "content": HERO_ONLY_PAGE.format(extra="<p>TODO: the pitch</p>"
                                    if e["project_id"] in BROKEN else ""),
             "created_at": e["occurred_at"]}
            for batch in batches for e in batch
            if e["type"] == "artifact_written" and e.get("playbook")
            and (e["artifact_path"], e["artifact_version"]) == ("site/index.html", 2)
        ]  # fmt: skip
        if not records:
            continue
        resp = requests.post(f"{base}/v1/artifacts", json={"records": records},
                             headers={"Authorization": f"Bearer {tokens[tenant]}"},
                             timeout=30)  # fmt: skip
        assert resp.status_code == 200 and resp.json()["accepted"] == len(records), resp.text
        stored += len(records)
    return stored


def _send_round(
    base: str, tokens: dict[str, str], round_no: int, start: datetime, now: datetime
) -> tuple[dict[str, int], dict[str, list[list[dict[str, Any]]]]]:
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    sent = workload(round_no, start, now)
    for tenant, batches in sent.items():
        for batch in batches:
            body = post_events(base, tokens[tenant], batch)
            for key in counts:
                counts[key] += body[key]
    return counts, sent


@pytest.fixture(scope="module")
def snapshot(module_db_url: str, module_workdir: Path) -> Any:
    db_url, workdir = module_db_url, module_workdir
    tokens: dict[str, str] = {}
    with psycopg.connect(db_url) as conn:
        for tenant, cap in TENANT_CAPS.items():
            create_tenant(conn, tenant, daily_cap_usd=Decimal(cap))
            tokens[tenant] = create_token(conn, role="agent", label=tenant, tenant_id=tenant)
        admin = create_token(conn, role="admin", label="judge", tenant_id=None)
    procs = []
    control_proc, control_url = start_control(
        db_url, workdir, env={"RUNLEDGER_ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN}
    )
    procs.append(control_proc)
    try:
        exporter_proc, exporter_url = start_exporter(
            db_url,
            {
                "poll_interval_seconds": 0.2,
                "gauge_refresh_seconds": 0.5,
                "stuck_after_seconds": STUCK_AFTER,
                "burn_window_seconds": BURN_WINDOW,
                "default_phase_target_seconds": DEFAULT_TARGET,
                "phase_targets_seconds": PHASE_TARGETS,
            },
            workdir,
        )
        procs.append(exporter_proc)
        prom_port = free_port()
        config = write_prometheus_config(
            workdir,
            prom_port,
            {
                "runledger-exporter": exporter_url.removeprefix("http://"),
                "runledger-control": control_url.removeprefix("http://"),
            },
            f"{WINDOW}s",
        )
        prom = start_prometheus(config, workdir, prom_port)
        procs.append(prom.proc)
        started = time.time()
        prom.wait_for('up{job="runledger-exporter"}', lambda v: v == 1)

        now = datetime.now(UTC)
        day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        start = max(now - timedelta(seconds=600), day_start + timedelta(seconds=1))
        posted, sent = _send_round(control_url, tokens, 1, start, now)
        judge_alerts(
            control_url, admin, JUDGED, ["true_positive", "true_positive", "false_positive"], "a1"
        )
        # A re-sent batch (all duplicates) and an invalid event (rejected).
        again = sent["acme"][0]
        dup = post_events(control_url, tokens["acme"], again)
        bad = post_events(control_url, tokens["acme"], [{**again[0], "phase": "9-not-a-phase"}])
        posted["duplicates"] += dup["duplicates"]
        posted["rejected"] += bad["rejected"]
        paused = requests.post(
            f"{control_url}/v1/tenants/umbrella/pause", json={"reason": "invoice overdue"},
            headers={"Authorization": f"Bearer {admin}"}, timeout=30,
        )  # fmt: skip
        assert paused.status_code == 200, paused.text
        # The agents' pages of round 1, then the daily sampling job over today's proofs.
        assert _store_pages(control_url, tokens, sent) == 3
        sample_started = time.time()
        sample_job = run_job("sample", db_url, load_quality_config(QUALITY))
        sampled_at = (sample_started, time.time())
        boundary = max_seq(db_url)
        prom.wait_for("runledger_exporter_tailed_seq", lambda v: v == boundary)
        prom.wait_for("sum(runledger_alert_judgements_total)", lambda v: v == 3)
        round1_seen = time.time()

        time.sleep(max(0.0, round1_seen + ROUND_GAP - time.time()))
        round2_sent = time.time()
        counts, _ = _send_round(control_url, tokens, 2, start, now)
        for key in posted:
            posted[key] += counts[key]
        judge_alerts(control_url, admin, JUDGED, ["true_positive", "false_positive"], "b2")
        last = max_seq(db_url)
        prom.wait_for("runledger_exporter_tailed_seq", lambda v: v == last)
        prom.wait_for("sum(runledger_alert_judgements_total)", lambda v: v == 5)
        after = time.time()
        prom.wait_for(
            "runledger_exporter_gauges_refreshed_timestamp_seconds", lambda v: (v or 0) > after
        )
        # Query once round 1's first samples are out of every window and round 2's last
        # pre-change sample is still in it: then one extrapolation factor fits every series.
        time.sleep(max(0.0, round1_seen + WINDOW + 3 - time.time()))
        at = time.time()
        assert at < round2_sent + WINDOW - 2, "the machine was too slow to query in time"
        snap = Snapshot(
            at=at, db_url=db_url, prom=prom, exporter_url=exporter_url,
            control_url=control_url, started=started, boundary_seq=boundary, posted=posted,
            sample_job=sample_job, sampled_at=sampled_at,
        )  # fmt: skip
        for result in prom.query('{job="runledger-exporter"}', at):
            name = result["metric"]["__name__"]
            snap.raw.setdefault(name, {})[_labels(result["metric"])] = float(result["value"][1])
        for rule in _rules():
            snap.rules[rule["record"]] = {
                _labels(r["metric"]): float(r["value"][1]) for r in prom.query(rule["record"], at)
            }
            window = _rule_window(prom, rule["record"], rule["expr"], at)
            if window is not None:
                snap.windows[rule["record"]] = window
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            snap.rows = list(conn.execute("SELECT * FROM events ORDER BY seq"))
            snap.freezes = list(conn.execute(
                "SELECT playbook, frozen_by, sampled, failed, lifted_at FROM publisher_freezes"
            ))  # fmt: skip
            for row in conn.execute(
                "SELECT outcome, count(*) AS n, count(*) FILTER (WHERE fingerprint LIKE 'b2%%')"
                " AS r2 FROM alert_outcomes GROUP BY outcome"
            ):
                snap.judgements_all[row["outcome"]] = row["n"]
                snap.judgements_round2[row["outcome"]] = row["r2"]
        yield snap
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def _rule_window(
    prom: Prometheus, name: str, expr: str, at: float
) -> tuple[float, dict[Labels, list[tuple[float, float]]]] | None:
    """Return when a single-term rate or increase rule was last evaluated, and the samples
    of its series that evaluation read (None for other rules).

    Each rule group is evaluated at its own offset, so groups read different samples at
    their window's edges: their extrapolation factors differ (rarely, when a scrape was
    late), and only the samples each evaluation read say what it must have recorded.
    """
    text = " ".join(expr.split())
    if " / " in text or not _TERM_RE.match(text):
        return None
    _by, _fn, metric, match = _parse_term(text)
    evaluated = prom.value(f"timestamp({name})", at)
    assert evaluated is not None, f"{name} recorded nothing"
    selector = metric + "{" + ",".join(f'{k}="{v}"' for k, v in match.items()) + "}"
    samples = {
        _labels(r["metric"]): [(float(t), float(v)) for t, v in r["values"]]
        for r in prom.query(f"{selector}[{WINDOW}s]", evaluated)
    }
    return evaluated, samples


def _extrapolated(
    points: list[tuple[float, float]], evaluated: float, is_rate: bool
) -> tuple[float, float] | None:
    """Return a counter's increase over the window ending at ``evaluated`` and the value
    ``rate``/``increase`` give it: Prometheus 2.42's extrapolatedRate, step by step."""
    if len(points) < 2:
        return None  # Prometheus leaves such a series out
    ms = [round(t * 1000) for t, _ in points]
    end = round(evaluated * 1000)
    start = end - WINDOW * 1000
    increase, last = points[-1][1] - points[0][1], 0.0
    for _, v in points:
        if v < last:  # a counter reset
            increase += last
        last = v
    to_start = (ms[0] - start) / 1000
    to_end = (end - ms[-1]) / 1000
    sampled = (ms[-1] - ms[0]) / 1000
    average = sampled / (len(points) - 1)
    if increase > 0 and points[0][1] >= 0:
        to_start = min(to_start, sampled * (points[0][1] / increase))
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    value = increase * (interval / sampled)
    return increase, value / WINDOW if is_rate else value


def _rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((PROM_DIR / "rules").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _compare(name: str, got: dict[Labels, float], want: dict[Labels, float]) -> list[str]:
    problems = []
    for labels in sorted(set(got) | set(want), key=sorted):
        g, w = got.get(labels), want.get(labels, 0.0)
        if g is None and w == 0:
            continue
        if g is None or not _close(g, w):
            problems.append(f"{name}{dict(sorted(labels))}: prometheus {g}, postgres {w}")
    return problems


# -- exported series ----------------------------------------------------------------------


def test_every_counter_and_histogram_equals_the_ledger(snapshot: Snapshot) -> None:
    expected = expected_metrics(snapshot.rows)
    assert len(expected) >= 30, sorted(expected)
    problems = []
    for name, want in expected.items():
        problems += _compare(name, snapshot.raw.get(name, {}), want)
    assert not problems, "\n".join(problems)
    # And nothing else is exported from events: every runledger_ series is accounted for.
    gauges = {"runledger_tenant_", "runledger_stuck_", "runledger_active_runs",
              "runledger_proofs_overdue", "runledger_publisher_frozen", "runledger_exporter_",
              "runledger_alert_judgements_total", "runledger_quality_"}  # fmt: skip
    unexplained = [n for n in snapshot.raw if n.startswith("runledger_") and n not in expected
                   and not any(n.startswith(g) for g in gauges)]  # fmt: skip
    assert not unexplained, unexplained


def test_costs_and_counts_are_exact(snapshot: Snapshot) -> None:
    spend = sum(snapshot.raw["runledger_cost_usd_total"].values())
    ledger = sum((r["cost_usd"] for r in snapshot.rows), Decimal(0))
    assert math.isclose(spend, float(ledger), rel_tol=1e-12)
    assert ledger == Decimal("0.203") * 4 * 2  # 4 projects, 2 rounds
    finished = sum(snapshot.raw["runledger_runs_finished_total"].values())
    assert finished == sum(r["type"] in ("run_finished", "run_failed") for r in snapshot.rows)
    assert finished == 5 * 4 * 2


def test_exporter_reports_itself_healthy_and_caught_up(snapshot: Snapshot) -> None:
    raw = snapshot.raw
    assert raw["runledger_exporter_database_up"][frozenset()] == 1
    assert raw["runledger_exporter_tail_lag_events"][frozenset()] == 0
    assert raw["runledger_exporter_database_errors_total"][frozenset()] == 0
    assert raw["runledger_exporter_events_tailed_total"][frozenset()] == len(snapshot.rows)
    assert raw["runledger_exporter_tailed_seq"][frozenset()] == snapshot.rows[-1]["seq"]
    assert raw["runledger_exporter_gauges_age_seconds"][frozenset()] < 5


# -- ledger gauges -------------------------------------------------------------------------


def _gauges_from_postgres(db_url: str, now: datetime) -> Series:
    day = now.date()
    day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
    want: Series = defaultdict(dict)
    with psycopg.connect(db_url) as conn:
        for tenant, paused, cap in conn.execute(
            "SELECT tenant_id, status = 'paused', daily_cap_usd FROM tenants"
        ):
            key = frozenset({("tenant", tenant)})
            spent_row = conn.execute(
                "SELECT spent_usd, blocked FROM caps WHERE tenant_id = %s AND date = %s",
                (tenant, day),
            ).fetchone()
            spent, blocked = spent_row or (Decimal(0), False)
            window_start = max(now - timedelta(seconds=BURN_WINDOW), day_start)
            burn_row = conn.execute(
                "SELECT COALESCE(sum(cost_usd), 0) FROM events WHERE tenant_id = %s"
                " AND occurred_at > %s AND occurred_at <= %s",
                (tenant, window_start, now),
            ).fetchone()
            burn = float(burn_row[0]) if burn_row else 0.0
            elapsed = (now - window_start).total_seconds()
            remaining = (day_start + timedelta(days=1) - now).total_seconds()
            overdue_row = conn.execute(
                "SELECT count(*) FROM proofs WHERE tenant_id = %s AND completed_at IS NULL"
                " AND due_at < %s",
                (tenant, now),
            ).fetchone()
            want["runledger_tenant_spend_today_usd"][key] = float(spent)
            want["runledger_tenant_daily_cap_usd"][key] = float(cap)
            want["runledger_tenant_blocked"][key] = 1.0 if blocked else 0.0
            want["runledger_tenant_paused"][key] = 1.0 if paused else 0.0
            want["runledger_tenant_projected_spend_today_usd"][key] = (
                float(spent) + burn / elapsed * remaining
            )
            want["runledger_proofs_overdue"][key] = float(overdue_row[0] if overdue_row else 0)
        for tenant, phase, n in conn.execute(
            "SELECT tenant_id, current_phase, count(*) FILTER (WHERE phase_entered_at < %s)"
            " FROM projects WHERE phase_entered_at >= COALESCE(last_advanced_at, '-infinity')"
            " GROUP BY 1, 2",
            (now - timedelta(seconds=STUCK_AFTER),),
        ):
            want["runledger_stuck_projects"][frozenset({("tenant", tenant), ("phase", phase)})] = n
        for tenant, role, status, n in conn.execute(
            "SELECT tenant_id, role, status, count(*) FROM runs"
            " WHERE status IN ('queued', 'running') GROUP BY 1, 2, 3"
        ):
            key = frozenset({("tenant", tenant), ("role", role), ("status", status)})
            want["runledger_active_runs"][key] = n
        for (playbook,) in conn.execute(
            "SELECT playbook FROM publisher_freezes WHERE lifted_at IS NULL"
        ):
            want["runledger_publisher_frozen"][frozenset({("playbook", playbook)})] = 1
    return want


def test_ledger_gauges_equal_postgres(snapshot: Snapshot) -> None:
    refreshed = snapshot.raw["runledger_exporter_gauges_refreshed_timestamp_seconds"]
    now = datetime.fromtimestamp(refreshed[frozenset()], UTC)
    want = _gauges_from_postgres(snapshot.db_url, now)
    problems = []
    for name, series in want.items():
        problems += _compare(name, snapshot.raw.get(name, {}), series)
    assert not problems, "\n".join(problems)
    # The workload is built to exercise every gauge, not to pass on zeros.
    raw = snapshot.raw
    assert raw["runledger_tenant_blocked"][frozenset({("tenant", "initech")})] == 1
    assert raw["runledger_stuck_projects"][frozenset({("tenant", "umbrella"),
                                                      ("phase", "build")})] == 1  # fmt: skip
    assert raw["runledger_proofs_overdue"][frozenset({("tenant", "acme")})] == 2
    queued = frozenset({("tenant", "acme"), ("role", "publisher"), ("status", "queued")})
    assert raw["runledger_active_runs"][queued] == 4
    assert (
        raw["runledger_tenant_projected_spend_today_usd"][frozenset({("tenant", "acme")})]
        > (raw["runledger_tenant_spend_today_usd"][frozenset({("tenant", "acme")})])
    )


def test_exporter_reads_what_pausing_sampling_and_judging_wrote(snapshot: Snapshot) -> None:
    """The exporter's reading of a tenant paused through the API, of the Publisher freeze and
    sample results the proof-sampling job stored, and of ``alert_outcomes``, written by the
    judged-alerts API."""
    raw = snapshot.raw
    assert raw["runledger_tenant_paused"][frozenset({("tenant", "umbrella")})] == 1
    assert raw["runledger_tenant_paused"][frozenset({("tenant", "acme")})] == 0
    assert snapshot.sample_job == (
        "sample: 1 playbook(s) sampled, 3 proofs validated; froze web"
    ), snapshot.sample_job
    assert snapshot.freezes == [
        {"playbook": "web", "frozen_by": "quality-sampler", "sampled": 3, "failed": 2,
         "lifted_at": None}
    ]  # fmt: skip
    web = frozenset({("playbook", "web")})
    assert raw["runledger_publisher_frozen"] == {web: 1}
    assert raw["runledger_quality_sampled_proofs"] == {web: 3}
    assert raw["runledger_quality_sample_failure_ratio"][web] == pytest.approx(2 / 3)
    ran = raw["runledger_quality_last_run_timestamp_seconds"][frozenset({("check", "sample")})]
    assert snapshot.sampled_at[0] - 1 <= ran <= snapshot.sampled_at[1] + 1
    judged = raw["runledger_alert_judgements_total"]
    name = ("alertname", JUDGED)
    assert judged == {frozenset({name, ("status", "true_positive")}): 3.0,
                      frozenset({name, ("status", "false_positive")}): 2.0}  # fmt: skip
    assert judged == {frozenset({("alertname", JUDGED), ("status", k)}): float(v)
                      for k, v in snapshot.judgements_all.items()}  # fmt: skip


# -- recording rules -----------------------------------------------------------------------

_TERM_RE = re.compile(
    r"^sum(?: by \((?P<by>[^)]*)\))?\s*\((?P<fn>rate|increase)\((?P<metric>\w+)"
    r"(?:\{(?P<match>[^}]*)\})?\[\w+\]\)\)$"
)


def _parse_term(text: str) -> tuple[tuple[str, ...], str, str, dict[str, str]]:
    m = _TERM_RE.match(" ".join(text.split()))
    assert m, f"the live check does not understand the term {text!r}"
    by = tuple(x.strip() for x in (m["by"] or "").split(",") if x.strip())
    match = dict(re.findall(r'(\w+)="([^"]*)"', m["match"] or ""))
    return by, m["fn"], m["metric"], match


def _grouped(
    series: dict[Labels, float], existing: dict[Labels, float], by: tuple[str, ...],
    match: dict[str, str],
) -> dict[Labels, float]:  # fmt: skip
    out: dict[Labels, float] = {}
    for labels in existing:
        d = dict(labels)
        if any(d.get(k) != v for k, v in match.items()):
            continue
        key = frozenset((k, d[k]) for k in by if k in d)
        out[key] = out.get(key, 0.0) + series.get(labels, 0.0)
    return out


def test_every_recording_rule_equals_the_ledger(snapshot: Snapshot) -> None:
    everything = expected_metrics(snapshot.rows)
    round2 = expected_metrics(snapshot.rows, after_seq=snapshot.boundary_seq)
    # Judged alerts come from alert_outcomes, not from events (see the module doc).
    judged = "runledger_alert_judgements_total"
    everything[judged] = {frozenset({("alertname", JUDGED), ("status", k)}): v
                          for k, v in snapshot.judgements_all.items()}  # fmt: skip
    round2[judged] = {frozenset({("alertname", JUDGED), ("status", k)}): v
                      for k, v in snapshot.judgements_round2.items()}  # fmt: skip
    refreshed = snapshot.raw["runledger_exporter_gauges_refreshed_timestamp_seconds"]
    gauges = _gauges_from_postgres(
        snapshot.db_url, datetime.fromtimestamp(refreshed[frozenset()], UTC)
    )
    problems: list[str] = []
    checked = exact_ratios = rates = 0
    for rule in _rules():
        name, expr = rule["record"], " ".join(rule["expr"].split())
        got = snapshot.rules[name]
        assert got, f"{name} recorded nothing"
        if name == "tenant:runledger_cap_utilisation:ratio":
            want = {}
            for key, cap in gauges["runledger_tenant_daily_cap_usd"].items():
                if cap > 0:
                    want[key] = gauges["runledger_tenant_spend_today_usd"][key] / cap
            problems += _compare(name, got, want)
            checked += 1
            continue
        terms = [t.strip() for t in expr.split(" / ")]
        parsed = [_parse_term(t) for t in terms]
        sums = [
            _grouped(round2.get(metric, {}), everything.get(metric, {}), by, match)
            for by, _fn, metric, match in parsed
        ]
        if len(parsed) == 2:  # a ratio: the extrapolation factor cancels, so exact
            num, den = sums
            want = {k: (num[k] / den[k] if den[k] else math.nan) for k in num if k in den}
            problems += _compare(name, got, want)
            exact_ratios += sum(0 < v < math.inf for v in want.values())
        else:  # a rate or increase: from the samples its evaluation read, per series
            (want_sum,) = sums
            by, fn, _metric, _match = parsed[0]
            assert set(got) == set(want_sum), f"{name}: {sorted(got)} vs {sorted(want_sum)}"
            evaluated, samples = snapshot.windows[name]
            moved: dict[Labels, float] = {}
            recorded: dict[Labels, float] = {}
            for labels, points in samples.items():
                result = _extrapolated(points, evaluated, fn == "rate")
                if result is None:
                    continue
                d = dict(labels)
                key = frozenset((k, d[k]) for k in by if k in d)
                moved[key] = moved.get(key, 0.0) + result[0]
                recorded[key] = recorded.get(key, 0.0) + result[1]
            # The window saw the counters move exactly as the ledger did in round 2 ...
            problems += _compare(f"{name} (increase in its window)", moved, want_sum)
            # ... and the rule recorded Prometheus' extrapolation of exactly that.
            problems += _compare(name, got, recorded)
            rates += sum(v > 0 for v in want_sum.values())
        checked += 1
    assert checked == len(_rules())
    assert exact_ratios >= 40, "too few non-trivial ratios to mean anything"
    assert rates >= 100, "too few rate series moved to mean anything"  # 128 in this workload
    assert not problems, "\n".join(problems)


# -- exemplars, exposition, control metrics, docs ------------------------------------------


def test_histograms_carry_trace_exemplars_of_the_runs(snapshot: Snapshot) -> None:
    runs_by_trace = {trace_of(r["run_id"]): r for r in snapshot.rows}
    for metric in ("runledger_run_cost_usd_bucket", "runledger_phase_time_to_gate_seconds_bucket",
                   "runledger_queue_wait_seconds_bucket"):  # fmt: skip
        found = snapshot.prom.exemplars(
            f'{metric}{{tenant="acme"}}', snapshot.started - 60, snapshot.at
        )
        exemplars = [(s["seriesLabels"], e) for s in found for e in s["exemplars"]]
        assert exemplars, f"no exemplars on {metric}"
        for series, exemplar in exemplars:
            run = runs_by_trace.get(exemplar["labels"]["trace_id"])
            assert run is not None, exemplar
            assert run["tenant_id"] == series["tenant"] == "acme"


def test_live_exposition_passes_promtool_check_metrics(snapshot: Snapshot) -> None:
    for url in (snapshot.exporter_url, snapshot.control_url):
        text = requests.get(url + "/metrics", timeout=10).text
        assert "# TYPE" in text
        result = run_promtool("check", "metrics", stdin=text)
        assert result.returncode == 0 and not result.stdout.strip(), (
            url, result.stdout, result.stderr
        )  # fmt: skip


def test_series_use_only_bounded_labels(snapshot: Snapshot) -> None:
    for name, series in snapshot.raw.items():
        if not name.startswith("runledger_"):
            continue
        for labels in series:
            assert {k for k, _ in labels} <= ALLOWED_LABELS, (name, labels)


def test_control_service_counts_ingest_across_workers(snapshot: Snapshot) -> None:
    posted = snapshot.posted
    assert posted["accepted"] == len(snapshot.rows)
    want = {"accepted": posted["accepted"], "duplicate": posted["duplicates"],
            "rejected": posted["rejected"]}  # fmt: skip
    assert want["duplicate"] > 0 and want["rejected"] == 1
    for status, n in want.items():
        value = snapshot.prom.value(
            f'sum(runledger_control_ingest_events_total{{status="{status}"}})', snapshot.at
        )
        assert value == n, (status, value, n)
    # Every /metrics answer (whichever worker serves it) has the sum of all workers.
    line = f'runledger_control_ingest_events_total{{status="accepted"}} {float(want["accepted"])}'
    for _ in range(6):
        text = requests.get(snapshot.control_url + "/metrics", timeout=10).text
        assert line in text, text[:2000]
    requests_seen = snapshot.prom.value(
        'sum(runledger_control_request_duration_seconds_count{status="200"})', snapshot.at
    )
    assert requests_seen is not None and requests_seen >= 12


def test_every_metric_and_rule_is_documented(snapshot: Snapshot) -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    names = {re.sub(r"_(bucket|sum|count)$", "", n) for n in snapshot.raw
             if n.startswith("runledger_")}  # fmt: skip
    control = requests.get(snapshot.control_url + "/metrics", timeout=10).text
    names |= {re.sub(r"_(bucket|sum|count|created)$", "", m)
              for m in re.findall(r"^(runledger_\w+)", control, re.M)}  # fmt: skip
    names = {n for n in names if not n.endswith("_created")}
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/metrics.md lacks: {missing}"
    missing_rules = sorted(r["record"] for r in _rules() if f"`{r['record']}`" not in doc)
    assert not missing_rules, f"docs/metrics.md lacks rules: {missing_rules}"
