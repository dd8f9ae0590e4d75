"""``runledger exporter``: run the Prometheus exporter."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

__all__ = ["exporter_command"]


@click.command("exporter")
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535))
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05, max=300),
    default=None,
    help="Seconds between reads of new events (default from the config: 1).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file overriding the packaged defaults (phase targets, stuck threshold, ...).",
)
def exporter_command(
    port: int, bind: str, poll_interval: float | None, config_path: str | None
) -> None:
    """Run the Prometheus exporter: tail events, serve /metrics."""
    from prometheus_client import CollectorRegistry, disable_created_metrics

    from runledger.exporter import Exporter, load_config
    from runledger.store import Database, resolve_database_url

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(config_path)
        if poll_interval is not None:
            config = config.with_overrides(poll_interval_seconds=poll_interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    # Prometheus 2.x stores each counter's _created sample as a series of its own: that
    # would double the series budget for no dashboard or alert.
    disable_created_metrics()
    # The exporter only reads; two connections cover the loop and a slow refresh.
    # Fail fast while PostgreSQL is down: the loop counts the error, serves the last values
    # and tries again at the next poll instead of blocking on the pool.
    db = Database(resolve_database_url(), min_size=1, max_size=2, timeout=0.5).open()
    exporter = Exporter(db, config, registry=CollectorRegistry())
    stopped = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        bound = exporter.serve(port, bind)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {bind}:{port}: {exc.strerror}") from None
    exporter.start()
    click.echo(f"runledger exporter serving http://{bind}:{bound}/metrics", err=True)
    stopped.wait()
    exporter.stop()
    db.close()
