"""Exporter settings: packaged defaults, optionally overridden by a YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runledger import validation
from runledger.validation import load_yaml

__all__ = ["ExporterConfig", "load_config"]

PositiveSeconds = Annotated[float, Field(gt=0)]


class ExporterConfig(BaseModel):
    """What the exporter tails, how often, and the thresholds its metrics use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval_seconds: float = Field(1.0, gt=0, le=300)
    gauge_refresh_seconds: float = Field(5.0, gt=0, le=3600)
    batch_size: int = Field(2000, ge=1, le=100_000)
    start_at: Literal["end", "beginning"] = "end"
    stuck_after_seconds: float = Field(172_800, gt=0)
    burn_window_seconds: float = Field(3600, gt=0, le=86_400)
    default_phase_target_seconds: float = Field(86_400, gt=0)
    phase_targets_seconds: dict[str, PositiveSeconds] = Field(default_factory=dict)

    def phase_target(self, phase: str) -> float:
        """Return the time-to-gate target of ``phase`` in seconds."""
        return self.phase_targets_seconds.get(phase, self.default_phase_target_seconds)

    def with_overrides(self, **overrides: Any) -> ExporterConfig:
        """Return a copy with ``overrides`` applied and validated."""
        return ExporterConfig.model_validate({**self.model_dump(), **overrides})


def load_config(path: str | Path | None = None) -> ExporterConfig:
    """Return the packaged defaults overridden by the YAML file at ``path``, validated.

    ``phase_targets_seconds`` is merged key by key.

    Raises:
        ConfigError: the file is unreadable, not YAML, or a setting is invalid; the message
            names the file and the setting.
    """
    with resources.as_file(resources.files("runledger.exporter") / "defaults.yml") as packaged:
        defaults = load_yaml(packaged, what="exporter defaults")
    if path is None:
        return validation.load_config(ExporterConfig, defaults, what="exporter defaults")
    return validation.load_config(ExporterConfig, path, what="exporter config", defaults=defaults)
