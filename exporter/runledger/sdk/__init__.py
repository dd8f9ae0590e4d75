"""Instrumentation for agents and Coordinators: runs, events, model calls, traces, logs.

Usage::

    from runledger.sdk import Ledger

    ledger = Ledger()  # RUNLEDGER_URL, RUNLEDGER_TOKEN, OTEL_* from the environment
    with ledger.run("acme", "proj-1", phase="build", role="implementer") as run:
        with run.model_call(model="gpt-4.1", provider="openai") as call:
            response = client.chat.completions.create(...)
            call.record(response=response)
        run.artifact_written("site/index.html", version=3)

See docs/sdk.md for delivery guarantees, redaction, sampling and cost controls.
"""

from runledger.sdk._calls import ExternalCall, ModelCall, model_call
from runledger.sdk._config import CostOptions, DeliveryOptions, TelemetryOptions
from runledger.sdk._costs import PartialResult, PublisherFrozen, RunCapReached
from runledger.sdk._ledger import Ledger
from runledger.sdk._reruns import RerunError, RerunRequest
from runledger.sdk._run import Budget, Run, current_run
from runledger.sdk._spool import SpoolFullError
from runledger.sdk._telemetry import RateLimitingSampler

__all__ = [
    "Budget",
    "CostOptions",
    "DeliveryOptions",
    "ExternalCall",
    "Ledger",
    "ModelCall",
    "PartialResult",
    "PublisherFrozen",
    "RateLimitingSampler",
    "RerunError",
    "RerunRequest",
    "Run",
    "RunCapReached",
    "SpoolFullError",
    "TelemetryOptions",
    "current_run",
    "model_call",
]
