"""Drift checks on Implementer outputs: today's structure features against a rolling baseline.

Per playbook, each count feature (length, headings, sections, JSON keys) is compared with the
two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``), and each section name or JSON
key that most baseline outputs have is compared by its presence with Fisher's exact test
(``scipy.stats.fisher_exact``: a 2x2 table of present/absent, baseline/today). The p-values
of every test of every playbook in one check are then corrected together
(Benjamini-Hochberg by default), so that when nothing drifted a check alarms at most
``false_alarm_rate`` of the time. docs/quality.md explains the choice.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from runledger.quality._features import NUMERIC_FEATURES
from runledger.quality.config import DriftSettings
from runledger.store._database import Database
from runledger.store.quality import (
    DriftRow,
    FeatureTest,
    note_job_run,
    output_features,
    record_drift,
)

__all__ = [
    "DriftReport",
    "FeatureTest",
    "adjust_pvalues",
    "check_drift",
    "feature_tests",
    "run_drift",
]

_UNITS = {"length": "characters", "headings": "headings", "sections": "sections",
          "json_keys": "keys"}  # fmt: skip
PRESENCE = {"section_names": "section", "key_names": "json_key"}
"""Name lists of the features and the prefix of their presence features."""
KINDS = (*NUMERIC_FEATURES, "section_presence", "key_presence")
"""The bounded ``feature`` label of the drift metrics: one per count, one per presence kind."""


def feature_tests(
    playbook: str,
    baseline: Sequence[Mapping[str, Any]],
    today: Sequence[Mapping[str, Any]],
    settings: DriftSettings,
) -> list[FeatureTest]:
    """Return the tests of one playbook's outputs (none when either side is too small)."""
    from scipy.stats import fisher_exact, ks_2samp

    if len(baseline) < settings.min_baseline or len(today) < settings.min_today:
        return []
    out: list[FeatureTest] = []
    for name in NUMERIC_FEATURES:
        b = [float(f[name]) for f in baseline if f.get(name) is not None]
        t = [float(f[name]) for f in today if f.get(name) is not None]
        if len(b) < settings.min_baseline or len(t) < settings.min_today:
            continue
        if len(set(b)) == 1 and set(b) == set(t):
            stat, p = 0.0, 1.0  # identical constants: nothing to test
        else:
            res = ks_2samp(b, t)
            stat, p = float(res.statistic), float(res.pvalue)
        out.append(
            FeatureTest(
                playbook,
                name,
                name,
                "ks",
                len(b),
                len(t),
                statistics.median(b),
                statistics.median(t),
                stat,
                p,
            )
        )
    for key, prefix in PRESENCE.items():
        seen = Counter(n for f in baseline for n in set(f.get(key) or ()))
        tracked = [
            n for n, c in seen.most_common()
            if c / len(baseline) >= settings.presence_min_share
        ][: settings.max_names]  # fmt: skip
        for name in tracked:
            b_has = seen[name]
            t_has = sum(1 for f in today if name in (f.get(key) or ()))
            table = [[t_has, len(today) - t_has], [b_has, len(baseline) - b_has]]
            p = float(fisher_exact(table).pvalue)
            b_share, t_share = b_has / len(baseline), t_has / len(today)
            out.append(
                FeatureTest(
                    playbook,
                    f"{prefix}:{name}",
                    "section_presence" if prefix == "section" else "key_presence",
                    "fisher",
                    len(baseline),
                    len(today),
                    b_share,
                    t_share,
                    abs(t_share - b_share),
                    p,
                )
            )
    return out


def adjust_pvalues(pvalues: Sequence[float], method: str) -> list[float]:
    """Return the p-values adjusted for multiple comparisons (``bh``, ``by`` or ``holm``).

    BH and BY come from ``scipy.stats.false_discovery_control``; Holm's step-down is
    ``max_{j<=i} min(1, (m - j) * p_(j))`` over the sorted p-values (0-based ``j``).
    """
    if not pvalues:
        return []
    if method in ("bh", "by"):
        from scipy.stats import false_discovery_control

        return [float(p) for p in false_discovery_control(list(pvalues), method=method)]
    if method != "holm":
        raise ValueError(f"unknown correction {method!r}; expected bh, by or holm")
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _describe(t: FeatureTest, adjusted: float) -> str:
    if t.test == "ks":
        ratio = f" (x{t.today_value / t.baseline_value:.2f})" if t.baseline_value else ""
        return (
            f"{t.feature}: median {t.baseline_value:,.0f} -> {t.today_value:,.0f} "
            f"{_UNITS[t.feature]}{ratio}; KS D={t.statistic:.2f}, adjusted p={adjusted:.2g}"
        )
    what, _, name = t.feature.partition(":")
    label = "section" if what == "section" else "JSON key"
    return (
        f"{label} {name!r}: in {t.baseline_value:.0%} of baseline outputs -> "
        f"{t.today_value:.0%} today; Fisher adjusted p={adjusted:.2g}"
    )


def check_drift(
    groups: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
    settings: DriftSettings,
) -> list[DriftRow]:
    """Test every playbook's (baseline, today) features and correct across all of them."""
    tests = [t for pb in sorted(groups) for t in feature_tests(pb, *groups[pb], settings)]
    adjusted = adjust_pvalues([t.p_value for t in tests], settings.correction)
    return [
        DriftRow(
            **asdict(t),
            adjusted_p=adj,
            drifted=adj <= settings.false_alarm_rate,
            summary=_describe(t, adj),
        )
        for t, adj in zip(tests, adjusted, strict=True)
    ]


@dataclass
class DriftReport:
    """One drift check: every test, and the playbooks that could not be checked and why."""

    day: date
    rows: list[DriftRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted(self) -> list[DriftRow]:
        """Return the tests that found drift after correction, most significant first."""
        return sorted((r for r in self.rows if r.drifted), key=lambda r: r.adjusted_p)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _split(
    rows: Iterable[tuple[str, datetime, dict[str, Any]]], today_start: datetime
) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = defaultdict(
        lambda: ([], [])
    )
    for playbook, created_at, feats in rows:
        groups[playbook][1 if created_at >= today_start else 0].append(feats)
    return dict(groups)


def run_drift(
    db: Database, settings: DriftSettings, day: date, *, store: bool = True
) -> DriftReport:
    """Check ``day``'s outputs of ``settings.role`` against the days before; store the result."""
    start, end = _day_bounds(day)
    with db.connection() as conn:
        rows = output_features(
            conn, role=settings.role, start=start - timedelta(days=settings.baseline_days),
            end=end,
        )  # fmt: skip
        groups = _split(rows, start)
        report = DriftReport(day, check_drift(groups, settings))
        tested = {r.playbook for r in report.rows}
        for playbook, (baseline, today) in sorted(groups.items()):
            if playbook not in tested:
                report.skipped[playbook] = (
                    f"{len(baseline)} baseline and {len(today)} outputs today; the check needs "
                    f"at least {settings.min_baseline} and {settings.min_today}"
                )
        if store:
            record_drift(conn, day, report.rows)
            note_job_run(conn, "drift", day)
    return report
