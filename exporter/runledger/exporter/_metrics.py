"""The counters and histograms the tailer feeds from ledger events (docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["NONE", "TailMetrics"]

NONE = "none"
"""Label value for an event without a model or playbook."""

TIME_TO_GATE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800)
RUN_COST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RUN_TOKEN_BUCKETS = (100, 500, 1000, 5000, 10_000, 50_000, 100_000, 500_000, 1_000_000)
QUEUE_WAIT_BUCKETS = (0.5, 1, 5, 15, 30, 60, 300, 900, 3600)
RECOVERY_BUCKETS = (60, 300, 900, 3600, 14400, 43200, 86400, 172800, 604800)

_TMPR = ("tenant", "model", "phase", "role")
_TPR = ("tenant", "phase", "role")
_TPP = ("tenant", "phase", "playbook")


class TailMetrics:
    """Every metric fed by tailing events, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        # Spend and tokens: every event may carry cost and token deltas.
        self.cost = counter("runledger_cost_usd", "Spend recorded on events, in US dollars.", _TMPR)
        self.input_tokens = counter(
            "runledger_input_tokens", "Model input tokens recorded on events, in tokens.", _TMPR
        )
        self.output_tokens = counter(
            "runledger_output_tokens", "Model output tokens recorded on events, in tokens.", _TMPR
        )
        self.cached_tokens = counter(
            "runledger_cached_tokens",
            "Input plus output tokens served from a cache instead of a live call, in tokens.",
            _TMPR,
        )
        # Runs.
        self.runs_started = counter(
            "runledger_runs_started", "Runs started (run_started events), in runs.", _TPR
        )
        self.uncapped_runs = counter(
            "runledger_sdk_uncapped_runs",
            "Runs started by an SDK that did not enforce the tenant daily cap "
            "(RUNLEDGER_ENFORCE_CAPS=0), in runs.",
            _TPR,
        )
        self.run_retries = counter(
            "runledger_run_retries",
            "Runs started as a retry (run_started with attempt above 1), in runs.",
            _TPR,
        )
        self.runs_finished = counter(
            "runledger_runs_finished",
            "Runs ended, by status succeeded, partial or failed, in runs.",
            (*_TPR, "status"),
        )
        self.model_runs_finished = counter(
            "runledger_model_runs_finished",
            "Runs ended, by the model the run used last and status, in runs.",
            ("model", "status"),
        )
        self.runs_intervened = counter(
            "runledger_runs_intervened",
            "Runs ended that had a user_override before their end, in runs.",
            _TPR,
        )
        self.user_overrides = counter(
            "runledger_user_overrides",
            "Human interventions (user_override events), in events.",
            _TPR,
        )
        self.cap_hits = counter(
            "runledger_cap_hits",
            "Caps that stopped spend (cap_hit events), by cap time, tokens, cost, external,"
            " tenant_daily or publish, in hits.",
            (*_TPR, "cap"),
        )
        # Artifacts and phases.
        self.artifacts_written = counter(
            "runledger_artifacts_written", "Artifact versions written, in artifacts.", _TPP
        )
        self.validation_failures = counter(
            "runledger_validation_failures",
            "Artifacts the Validator rejected (validation_failed events), in artifacts.",
            _TPP,
        )
        self.phase_entries = counter(
            "runledger_phase_entries", "Phases entered (phase_entered events), in phases.", _TPP
        )
        self.phase_advances = counter(
            "runledger_phase_advances",
            "Phases that passed their gate (phase_advanced events), in phases.",
            _TPP,
        )
        self.phase_advances_within_target = counter(
            "runledger_phase_advances_within_target",
            "Phase advances whose time-to-gate was within the phase's target, in phases.",
            _TPP,
        )
        self.publishes = counter(
            "runledger_publishes",
            "Publisher runs done, by status complete or partial, in publishes.",
            ("tenant", "playbook", "status"),
        )
        # Outcomes outside the pipeline.
        self.microsite_visits = counter(
            "runledger_microsite_visits",
            "Visits to published microsites, in visits.",
            ("tenant", "playbook"),
        )
        self.microsite_conversions = counter(
            "runledger_microsite_conversions",
            "Microsite visits that converted, in conversions.",
            ("tenant", "playbook"),
        )
        self.demos_started = counter(
            "runledger_demos_started", "Uber Mode demos started, in demos.", ("tenant",)
        )
        self.demos_completed = counter(
            "runledger_demos_completed", "Uber Mode demos run to their end, in demos.", ("tenant",)
        )
        self.proofs_requested = counter(
            "runledger_proofs_requested",
            "Proofs sent to owners for approval, in proofs.",
            ("tenant",),
        )
        self.proofs_completed = counter(
            "runledger_proofs_completed",
            "Proofs answered by owners, by status approved or rejected, in proofs.",
            ("tenant", "status"),
        )
        self.external_calls = counter(
            "runledger_external_calls",
            "Non-model calls (APIs, tools, webhooks), by status ok or error, in calls.",
            ("tenant", "role", "status"),
        )
        self.impersonations = counter(
            "runledger_impersonations", "Impersonation sessions started, in sessions.", ("tenant",)
        )
        # Histograms (exemplars carry trace_id).
        self.time_to_gate = histogram(
            "runledger_phase_time_to_gate_seconds",
            "Time from entering a phase to passing its gate, in seconds.",
            ("tenant", "phase"),
            TIME_TO_GATE_BUCKETS,
        )
        self.run_cost = histogram(
            "runledger_run_cost_usd",
            "Spend of one run at its end, in US dollars.",
            ("tenant", "phase"),
            RUN_COST_BUCKETS,
        )
        self.run_tokens = histogram(
            "runledger_run_tokens",
            "Input plus output tokens of one run at its end, in tokens.",
            ("tenant", "phase"),
            RUN_TOKEN_BUCKETS,
        )
        self.queue_wait = histogram(
            "runledger_queue_wait_seconds",
            "Time a run waited from run_queued to run_started, in seconds.",
            ("tenant", "role"),
            QUEUE_WAIT_BUCKETS,
        )
        self.recovery = histogram(
            "runledger_failure_recovery_seconds",
            "Time from a phase's first failed run to its next successful run, in seconds.",
            ("phase",),
            RECOVERY_BUCKETS,
        )
