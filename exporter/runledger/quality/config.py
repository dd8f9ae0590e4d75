"""Quality settings: the Validator, sample sizes, freeze thresholds, drift test, schedule.

Read from the YAML file named by ``RUNLEDGER_QUALITY_CONFIG`` (or ``--config``); every key
is optional. docs/quality.md shows a complete file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from runledger import _env
from runledger.validation import ConfigError, load_config

__all__ = [
    "DriftSettings",
    "PlaybookSettings",
    "QualityConfig",
    "QualityConfigError",
    "SampleSettings",
    "ScheduleSettings",
    "load_quality_config",
]

Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
Spec = Annotated[str, StringConstraints(min_length=1, max_length=300, strip_whitespace=True)]
Cron = Annotated[str, StringConstraints(pattern=r"^\S+ \S+ \S+ \S+ \S+$")]


class QualityConfigError(ConfigError):
    """The quality configuration is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSettings(_Section):
    """How many of a playbook's proofs of the day are re-validated, and when it freezes."""

    rate: Ratio = 0.2
    """Share of the day's proofs sampled ..."""
    size: Annotated[int, Field(ge=1, le=10_000)] = 50
    """... at most this many ..."""
    min_size: Annotated[int, Field(ge=1, le=10_000)] = 5
    """... and at least this many (or all, when the day has fewer)."""
    threshold: Ratio = 0.2
    """The Publisher is frozen when the sampled failure rate exceeds this ..."""
    min_sampled: Annotated[int, Field(ge=1, le=10_000)] = 5
    """... over at least this many validated proofs."""


class PlaybookSettings(_Section):
    """Per-playbook overrides of the Validator and the sample settings."""

    validator: Spec | None = None
    rate: Ratio | None = None
    size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    min_size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    threshold: Ratio | None = None
    min_sampled: Annotated[int, Field(ge=1, le=10_000)] | None = None


class DriftSettings(_Section):
    """The drift check: baseline window, minimum samples, and the false-alarm rate."""

    baseline_days: Annotated[int, Field(ge=1, le=29)] = 14
    """Days before the checked day that make up the rolling baseline (within retention)."""
    min_baseline: Annotated[int, Field(ge=2, le=100_000)] = 30
    min_today: Annotated[int, Field(ge=2, le=100_000)] = 10
    false_alarm_rate: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.01
    """The corrected level: under no drift, a check alarms at most this often."""
    correction: Literal["bh", "by", "holm"] = "bh"
    """Benjamini-Hochberg (default), Benjamini-Yekutieli or Holm, across every test of a check."""
    presence_min_share: Ratio = 0.5
    """A section name or JSON key is tracked when at least this share of baseline outputs
    has it."""
    max_names: Annotated[int, Field(ge=0, le=50)] = 10
    """Tracked names per playbook and kind (the most common in the baseline)."""
    role: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "implementer"


class ScheduleSettings(_Section):
    """When ``runledger quality scheduler`` (and ``runledger up``) run the daily jobs (UTC)."""

    sample: Cron = "50 23 * * *"
    drift: Cron = "55 23 * * *"
    retention: Cron = "15 0 * * *"


class QualityConfig(_Section):
    """The whole quality configuration."""

    validator: Spec | None = None
    """``module:function`` or the name of a ``runledger.validators`` entry point."""
    sample: SampleSettings = SampleSettings()
    playbooks: dict[str, PlaybookSettings] = Field(default_factory=dict)
    drift: DriftSettings = DriftSettings()
    schedule: ScheduleSettings = ScheduleSettings()

    def for_playbook(self, playbook: str) -> tuple[str | None, SampleSettings]:
        """Return the playbook's Validator spec and its sample settings (overrides applied)."""
        over = self.playbooks.get(playbook)
        if over is None:
            return self.validator, self.sample
        changes = {k: v for k, v in over.model_dump().items() if v is not None and k != "validator"}
        return over.validator or self.validator, self.sample.model_copy(update=changes)


def load_quality_config(source: str | Path | dict[str, Any] | None = None) -> QualityConfig:
    """Load the quality configuration from ``source``, ``RUNLEDGER_QUALITY_CONFIG``, or defaults.

    Raises:
        QualityConfigError: the file is unreadable or a key is invalid (named).
    """
    if source is None:
        source = os.environ.get(_env.QUALITY_CONFIG) or None
    if source is None:
        return QualityConfig()
    return load_config(
        QualityConfig, source, what="quality configuration", error=QualityConfigError
    )
