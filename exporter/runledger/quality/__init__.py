"""Quality jobs: proof sampling through the Validator (can freeze a Publisher), drift checks
on Implementer outputs, and their schedule (docs/quality.md)."""

from runledger.quality._features import features, sniff_media_type
from runledger.quality.config import QualityConfig, QualityConfigError, load_quality_config
from runledger.quality.drift import DriftReport, adjust_pvalues, check_drift, run_drift
from runledger.quality.sampling import NoValidatorError, SampleReport, run_sample
from runledger.quality.validators import (
    ENTRY_POINT_GROUP,
    Artifact,
    Validator,
    ValidatorError,
    Verdict,
    load_validator,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Artifact",
    "DriftReport",
    "NoValidatorError",
    "QualityConfig",
    "QualityConfigError",
    "SampleReport",
    "Validator",
    "ValidatorError",
    "Verdict",
    "adjust_pvalues",
    "check_drift",
    "features",
    "load_quality_config",
    "load_validator",
    "run_drift",
    "run_sample",
    "sniff_media_type",
]
