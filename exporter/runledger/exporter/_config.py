"""Exporter settings: packaged defaults, optionally overridden by a YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: must be a mapping of settings, not {type(data).__name__}")
    return data


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        message = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def load_config(path: str | Path | None = None) -> ExporterConfig:
    """Return the packaged defaults overridden by the YAML file at ``path``, validated.

    Raises:
        ValueError: the file is unreadable, not YAML, or a setting is invalid; the message
            names the file and the setting.
    """
    defaults = _read_yaml(
        resources.files("runledger.exporter").joinpath("defaults.yml").read_text("utf-8"),
        "defaults.yml",
    )
    merged = dict(defaults)
    source = "defaults.yml"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ValueError(f"{source}: cannot read exporter config: {exc.strerror}") from None
        override = _read_yaml(text, source)
        targets = override.get("phase_targets_seconds")
        merged.update(override)
        if isinstance(targets, dict):
            merged["phase_targets_seconds"] = {
                **defaults.get("phase_targets_seconds", {}),
                **targets,
            }
    try:
        return ExporterConfig.model_validate(merged)
    except ValidationError as exc:
        raise ValueError(f"{source}: invalid exporter config: {_describe(exc)}") from None
