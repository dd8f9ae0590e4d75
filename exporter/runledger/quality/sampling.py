"""Daily proof sampling: re-validate a random sample of each playbook's proofs in strict mode,
and freeze the playbook's Publisher when too many fail."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from runledger.quality.config import QualityConfig, SampleSettings
from runledger.quality.validators import Artifact, load_validator, run_validator
from runledger.store._database import Database
from runledger.store.quality import (
    Freeze,
    ProofCandidate,
    SampleResult,
    active_freeze,
    freeze_publisher,
    lifted_for_day,
    note_job_run,
    proofs_of_day,
    record_sample,
)

__all__ = ["SAMPLER", "NoValidatorError", "PlaybookSample", "SampleReport", "run_sample"]

SAMPLER = "quality-sampler"
"""Who freezes a Publisher, in ``publisher_freezes.frozen_by`` and the audit log."""


class NoValidatorError(ValueError):
    """A playbook with proofs to sample has no Validator configured."""


@dataclass
class PlaybookSample:
    """One playbook's sample of the day and what came of it."""

    playbook: str
    validator: str
    settings: SampleSettings
    proofs: int = 0
    eligible: int = 0
    results: list[SampleResult] = field(default_factory=list)
    froze: Freeze | None = None
    frozen_already: Freeze | None = None
    lifted_today: Freeze | None = None

    @property
    def sampled(self) -> int:
        return len(self.results)

    def count(self, status: str) -> int:
        """Return how many sampled proofs got ``status`` (pass, fail, error)."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def failure_rate(self) -> float | None:
        """Return failed / (passed + failed); None when nothing was validated."""
        judged = self.count("pass") + self.count("fail")
        return self.count("fail") / judged if judged else None

    @property
    def over_threshold(self) -> bool:
        """Return True when enough proofs were validated and too many failed."""
        rate = self.failure_rate
        judged = self.count("pass") + self.count("fail")
        return (
            rate is not None
            and judged >= self.settings.min_sampled
            and rate > self.settings.threshold
        )

    def freeze_reason(self, day: date) -> str:
        """Return the one-line reason a freeze records: the sample's numbers only.

        A playbook is shared by tenants and every role may read a freeze (the SDK asks for
        it), so the reason names no tenant's artifact; admins read each sampled artifact's
        verdict in ``quality_samples`` (``GET /v1/playbooks/<playbook>/quality``).
        """
        rate = self.failure_rate or 0.0
        return (
            f"quality sampling of {day.isoformat()}: {self.count('fail')} of "
            f"{self.count('pass') + self.count('fail')} sampled proofs failed strict validation "
            f"({rate:.0%}, threshold {self.settings.threshold:.0%})"
        )

    def summary(self) -> dict[str, Any]:
        """Return the values of the playbook's ``quality_sample_runs`` row."""
        return {
            "proofs": self.proofs,
            "eligible": self.eligible,
            "sampled": self.sampled,
            "failed": self.count("fail"),
            "errors": self.count("error"),
            "failure_rate": self.failure_rate,
            "threshold": self.settings.threshold,
            "froze": self.froze is not None,
        }


@dataclass
class SampleReport:
    """One sampling run over every playbook with proofs on ``day``."""

    day: date
    seed: int | None
    playbooks: list[PlaybookSample] = field(default_factory=list)


def sample_size(eligible: int, settings: SampleSettings) -> int:
    """Return how many of ``eligible`` proofs to sample: ``rate`` of them, within
    ``[min_size, size]``, never more than there are."""
    wanted = max(math.ceil(settings.rate * eligible), settings.min_size)
    return min(eligible, settings.size, wanted)


def _rng(seed: int | None, day: date, playbook: str) -> random.Random:
    if seed is None:
        return random.SystemRandom()
    # One stream per playbook: adding a playbook never changes another's sample.
    return random.Random(f"{seed}:{day.isoformat()}:{playbook}")


def _group(candidates: Iterable[ProofCandidate]) -> dict[str, list[ProofCandidate]]:
    groups: dict[str, list[ProofCandidate]] = defaultdict(list)
    for c in candidates:
        groups[c.playbook].append(c)
    return dict(groups)


def run_sample(
    db: Database,
    config: QualityConfig,
    day: date,
    *,
    seed: int | None = None,
    size: int | None = None,
    rate: float | None = None,
    playbooks: Iterable[str] | None = None,
    loader: Callable[[str], Callable[..., Any]] = load_validator,
) -> SampleReport:
    """Sample and re-validate ``day``'s proofs per playbook; freeze over-threshold Publishers.

    Args:
        db: the ledger.
        config: Validator, sample sizes and thresholds.
        day: the UTC day whose proofs (``proof_requested`` events) are sampled.
        seed: makes the sample deterministic (one stream per day and playbook).
        size, rate: override the configured sample size and rate for every playbook.
        playbooks: only these playbooks.
        loader: turns a Validator spec into a callable (``load_validator``).

    Raises:
        NoValidatorError: a playbook with proofs has no Validator configured.
        ValidatorError: a configured Validator cannot be loaded.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with db.connection() as conn:
        groups = _group(proofs_of_day(conn, start, start + timedelta(days=1)))
    only = set(playbooks) if playbooks is not None else None
    report = SampleReport(day, seed)
    loaded: dict[str, Callable[..., Any]] = {}
    plans: list[tuple[PlaybookSample, list[ProofCandidate]]] = []
    for playbook in sorted(groups):
        if only is not None and playbook not in only:
            continue
        spec, settings = config.for_playbook(playbook)
        overrides = {k: v for k, v in (("size", size), ("rate", rate)) if v is not None}
        if overrides:
            settings = settings.model_copy(update=overrides)
        if spec is None:
            raise NoValidatorError(
                f"playbook {playbook!r} has proofs to sample but no Validator is configured: "
                "set `validator: module:function` (or an entry point name of the group "
                "runledger.validators) in the quality configuration (RUNLEDGER_QUALITY_CONFIG)"
            )
        if spec not in loaded:
            loaded[spec] = loader(spec)
        candidates = groups[playbook]
        eligible = sorted(
            (c for c in candidates if c.content is not None), key=lambda c: c.proof_id
        )
        sample = PlaybookSample(playbook, spec, settings, len(candidates), len(eligible))
        picked = _rng(seed, day, playbook).sample(eligible, sample_size(len(eligible), settings))
        plans.append((sample, sorted(picked, key=lambda c: c.proof_id)))
    for sample, picked in plans:
        validator = loaded[sample.validator]
        for c in picked:
            assert c.content is not None and c.artifact_path and c.artifact_version is not None
            artifact = Artifact(
                c.tenant_id, c.project_id, c.playbook, c.artifact_path, c.artifact_version,
                c.media_type or "text/plain", c.content,
            )  # fmt: skip
            status, reason = run_validator(validator, artifact)
            sample.results.append(
                SampleResult(
                    c.proof_id,
                    c.tenant_id,
                    c.project_id,
                    c.artifact_path,
                    c.artifact_version,
                    status,
                    reason,
                )
            )
        with db.connection() as conn:
            if sample.over_threshold:
                sample.frozen_already = active_freeze(conn, sample.playbook)
                sample.lifted_today = lifted_for_day(conn, sample.playbook, day)
                if sample.frozen_already is None and sample.lifted_today is None:
                    sample.froze = freeze_publisher(
                        conn, playbook=sample.playbook, reason=sample.freeze_reason(day),
                        actor=SAMPLER, day=day, sampled=sample.sampled,
                        failed=sample.count("fail"), failure_rate=sample.failure_rate or 0.0,
                        threshold=sample.settings.threshold,
                    )  # fmt: skip
            record_sample(
                conn, day=day, playbook=sample.playbook, validator=sample.validator,
                results=sample.results, summary=sample.summary(),
            )  # fmt: skip
        report.playbooks.append(sample)
    if only is None:
        with db.connection() as conn:
            note_job_run(conn, "sample", day)
    return report
