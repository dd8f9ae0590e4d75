"""The control service's own ``/metrics``: request latency, ingest counts, webhook failures.

Under gunicorn every worker is its own process, so each would report only the requests it
served. ``runledger control`` therefore runs prometheus-client in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``): each worker writes its samples to files there and
``/metrics``, in whichever worker answers, sums them all. Without that variable (tests, a
single process) the app's own registry is served.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from runledger.control._auth import public

__all__ = ["ControlMetrics", "bp", "gunicorn_hooks", "init_app", "use_multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INGEST_STATUSES = ("accepted", "duplicate", "rejected")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

bp = Blueprint("metrics", __name__)


class ControlMetrics:
    """The control service's metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.request_duration = Histogram(
            "runledger_control_request_duration_seconds",
            "Time to answer an HTTP request, by response status code, in seconds.",
            ["status"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.ingest_events = Counter(
            "runledger_control_ingest_events",
            "Events received on POST /v1/events, by result accepted, duplicate or rejected,"
            " in events.",
            ["status"],
            registry=registry,
        )
        self.webhook_failures = Counter(
            "runledger_control_webhook_failures",
            "Alert notifications the control service failed to deliver, in notifications.",
            registry=registry,
        )
        for status in INGEST_STATUSES:
            self.ingest_events.labels(status)

    def count_ingest(self, counts: Mapping[str, int]) -> None:
        """Add one ingest request's per-result event counts."""
        for status in INGEST_STATUSES:
            if counts.get(status):
                self.ingest_events.labels(status).inc(counts[status])

    def webhook_failed(self) -> None:
        """Count one alert notification that could not be delivered."""
        self.webhook_failures.inc()


def init_app(app: Flask) -> ControlMetrics:
    """Create the app's metrics, time every request and feed ingest counts."""
    metrics = ControlMetrics(CollectorRegistry())
    app.extensions["runledger.metrics"] = metrics
    app.extensions["runledger.ingest_counts"] = metrics.count_ingest

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            metrics.request_duration.labels(str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response

    @app.teardown_request
    def _observe_crash(exc: BaseException | None) -> None:
        # after_request is skipped when a view raised something no handler answered.
        started = g.pop("metrics_started", None)
        if started is not None and exc is not None:
            metrics.request_duration.labels("500").observe(time.perf_counter() - started)

    app.register_blueprint(bp)
    return metrics


@bp.get("/metrics")
@public
def metrics_view() -> Response:
    """Expose the control service's metrics (summed over workers under gunicorn)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = current_app.extensions["runledger.metrics"].registry
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), headers={"Content-Type": content_type})


def use_multiprocess_dir() -> dict[str, Callable[..., Any]]:
    """Switch prometheus-client to multiprocess mode; return gunicorn hooks to set.

    Call in the gunicorn master before workers start. Uses ``PROMETHEUS_MULTIPROC_DIR``
    when set (its stale files are removed) or a new temporary directory removed on exit.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="runledger-control-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus-client picks its value class when imported; the CLI may have imported it
    # already, so pick again now that the variable is set (before any metric exists).
    values.ValueClass = values.get_value_class()
    return gunicorn_hooks(directory, remove_on_exit=not given)


def gunicorn_hooks(directory: Path, *, remove_on_exit: bool) -> dict[str, Callable[..., Any]]:
    """Return gunicorn ``child_exit`` (and maybe ``on_exit``) hooks for ``directory``."""

    def child_exit(_server: Any, worker: Any) -> None:
        mark_process_dead(worker.pid, str(directory))

    hooks: dict[str, Callable[..., Any]] = {"child_exit": child_exit}
    if remove_on_exit:

        def on_exit(_server: Any) -> None:
            shutil.rmtree(directory, ignore_errors=True)

        hooks["on_exit"] = on_exit
    return hooks
