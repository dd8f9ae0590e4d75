"""The ``runledger`` command."""

from __future__ import annotations

import gc
import json
import os
import sys
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import click

from runledger import _env
from runledger._click import cli_actor as _cli_actor
from runledger._click import usd
from runledger.alert_cli import alerts_group, tenant_notify
from runledger.cost.cli import cost_group, pricing_group
from runledger.dashboards.cli import dashboards_group
from runledger.exporter.cli import exporter_command
from runledger.quality.cli import quality_group
from runledger.sdk.cli import spool_group
from runledger.store import resolve_database_url
from runledger.store.audit import record_audit
from runledger.store.tokens import ROLES

__all__ = ["main"]


@click.group()
@click.version_option(package_name="runledger")
def main() -> None:
    """runledger: observability and cost control for LLM agent pipelines."""


# -- database --------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The ledger database (embedded PostgreSQL unless RUNLEDGER_DATABASE_URL is set)."""


@db.command("url")
def db_url() -> None:
    """Start the embedded server if needed and print the database URL."""
    click.echo(resolve_database_url())


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server started under RUNLEDGER_HOME."""
    from runledger.store import state_dir, stop_embedded

    pgdata = state_dir() / "pg"
    if stop_embedded(pgdata):
        click.echo("embedded PostgreSQL stopped")
    else:
        click.echo(f"no embedded server running in {pgdata}")


@main.command()
def migrate() -> None:
    """Apply pending schema migrations (idempotent)."""
    from runledger.store import migrate as run_migrations
    from runledger.store.migrate import MigrationError

    try:
        applied = run_migrations(resolve_database_url())
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}")
    else:
        click.echo("schema is up to date")


# -- tenants and tokens ----------------------------------------------------------------------


@main.group()
def tenant() -> None:
    """Tenants."""


@tenant.command("create")
@click.argument("tenant_id")
@click.option("--daily-cap-usd", required=True, callback=usd, help="Daily $ cap.")
@click.option("--name", default="", help="Display name.")
def tenant_create(tenant_id: str, daily_cap_usd: Decimal, name: str) -> None:
    """Create a tenant with a daily $ cap."""
    import psycopg

    from runledger.store.tenants import create_tenant

    with psycopg.connect(resolve_database_url()) as conn:
        try:
            created = create_tenant(conn, tenant_id, daily_cap_usd=daily_cap_usd, display_name=name)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if created:
            record_audit(
                conn, actor=_cli_actor(), role="admin", action="tenant.create",
                tenant_id=tenant_id, target=tenant_id,
                details={"daily_cap_usd": str(daily_cap_usd)},
            )  # fmt: skip
    click.echo(f"tenant {tenant_id} {'created' if created else 'already exists (unchanged)'}")


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--tenant", "tenant_id", default=None, help="Tenant of an agent or owner token.")
@click.option("--label", default="", help="What the token is for.")
def token_create(role: str, tenant_id: str | None, label: str) -> None:
    """Create a token and print its secret (shown once)."""
    import psycopg

    from runledger.store.tokens import create_token

    with psycopg.connect(resolve_database_url()) as conn:
        try:
            secret = create_token(
                conn, role=role, label=label or f"{role}:{tenant_id or '*'}", tenant_id=tenant_id
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        record_audit(
            conn, actor=_cli_actor(), role="admin", action="token.create", tenant_id=tenant_id,
            target=label or f"{role}:{tenant_id or '*'}", details={"role": role},
        )  # fmt: skip
    click.echo(secret)


# -- services ------------------------------------------------------------------------------


_KEEPALIVE = 5
"""Seconds an idle connection, or a request whose bytes stopped coming, is kept open."""
_SHM = "/dev/shm"  # noqa: S108 - gunicorn's heartbeat file: mkstemp'd there and unlinked


_GC_THRESHOLDS = (50_000, 20, 20)
"""Collect the young generation every 50,000 allocations, not 700. An ingest request builds
about 60 objects per event and keeps most of them to its end (models, payloads, results), so
with the default every 700 allocations the collector walked the batch's live objects over
and over: about 10% of a worker's CPU. Request garbage is acyclic and freed as it goes; the
collector only looks for cycles, now less often (a few MB of objects at most)."""


def _freeze_gc(_worker: Any) -> None:
    """Move everything a worker holds once it has loaded the app out of the collector's reach.

    The modules, app and pools never become garbage, yet every full collection walked them
    all: about 6 µs per ingested event (bench/ingest.py). ``gc.freeze`` exempts them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


@main.command()
@click.option(
    "--bind", default=None, help="host:port (default RUNLEDGER_CONTROL_BIND or 127.0.0.1:8480)."
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
def control(bind: str | None, workers: int, threads: int) -> None:
    """Run the control service under gunicorn."""
    from gunicorn.app.base import BaseApplication

    from runledger._buffered_worker import SUPPORTED, BufferedThreadWorker

    if not SUPPORTED:
        click.echo(
            "warning: this gunicorn cannot hand a connection back to its poller; slow clients "
            "can hold every thread (upgrade gunicorn, or run behind nginx: docs/operations.md)",
            err=True,
        )

    os.environ[_env.DATABASE_URL] = resolve_database_url()
    bind = bind or os.environ.get(_env.CONTROL_BIND) or "127.0.0.1:8480"
    from runledger.control.metrics import use_multiprocess_dir

    metrics_hooks = use_multiprocess_dir()  # /metrics sums every worker's samples

    class _App(BaseApplication):
        def load_config(self) -> None:
            for hook, func in metrics_hooks.items():
                self.cfg.set(hook, func)
            self.cfg.set("bind", [bind])
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            # Requests reach a thread only once whole: slow clients hold no thread.
            self.cfg.set("worker_class", BufferedThreadWorker if SUPPORTED else "gthread")
            self.cfg.set("keepalive", _KEEPALIVE)
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("post_worker_init", _freeze_gc)
            if os.access(_SHM, os.W_OK):
                # Workers touch a heartbeat file on every loop; keep it off the disk.
                self.cfg.set("worker_tmp_dir", _SHM)

        def load(self) -> Any:
            from runledger.control import create_app

            return create_app()

    _App().run()


@main.command("up")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--control-port", type=click.IntRange(1, 65535), default=8480, show_default=True)
@click.option("--exporter-port", type=click.IntRange(1, 65535), default=9464, show_default=True)
@click.option("--prometheus-port", type=click.IntRange(1, 65535), default=9090, show_default=True)
@click.option("--alertmanager-port", type=click.IntRange(1, 65535), default=9093, show_default=True)
def up_command(
    duration: float | None,
    control_port: int,
    exporter_port: int,
    prometheus_port: int,
    alertmanager_port: int,
) -> None:
    """Start the whole stack natively with the demo pipeline driving it."""
    from runledger.demo.stack import Ports, up

    ports = Ports(control_port, exporter_port, prometheus_port, alertmanager_port)
    sys.exit(up(duration=duration, ports=ports))


@main.command("down")
def down_command() -> None:
    """Stop a running `runledger up`."""
    from runledger.demo.stack import down

    sys.exit(down())


# -- jobs -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--days", default=None, help="Retention window, 14-30 (default RUNLEDGER_RETENTION_DAYS or 30)."
)
@click.option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
def retention(days: str | None, dry_run: bool) -> None:
    """Roll up closed days and drop event partitions older than the window."""
    from runledger.store.retention import (
        retention_days_from_env,
        run_retention,
        validate_retention_days,
    )

    try:
        window = validate_retention_days(days) if days is not None else retention_days_from_env()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--days") from None
    report = run_retention(resolve_database_url(), days=window, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"cutoff {report.cutoff} ({window} days)")
    click.echo(f"{verb} {len(report.dropped_partitions)} partition(s): "
               f"{', '.join(report.dropped_partitions) or '-'}")  # fmt: skip
    click.echo(
        f"rolled up {len(report.rolled_up_days)} day(s); pruned"
        f" {report.deleted_prompt_audit} prompts, {report.deleted_trace_spans} spans,"
        f" {report.deleted_rollups} old rollups"
    )
    click.echo(f"pruned {report.deleted_artifact_snapshots} artifact snapshot(s)")


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 when the checked-in schema is stale.")
def schema(check: bool) -> None:
    """Write the event JSON Schema generated from the code (events.schema.json)."""
    from runledger.events import event_json_schema

    text = json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
    path = Path(str(resources.files("runledger").joinpath("events.schema.json")))
    if check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            click.echo(f"{path.name} is stale: run `runledger schema`", err=True)
            sys.exit(1)
        click.echo(f"{path.name} is current")
        return
    path.write_text(text)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 when the checked-in document is stale.")
def openapi(check: bool) -> None:
    """Write the control service's OpenAPI document (control/openapi.json)."""
    from runledger.control import create_app
    from runledger.control.openapi import NoDatabase, checked_in_path, document_text

    text = document_text(create_app({"DATABASE": NoDatabase()}))
    path = checked_in_path()
    if check:
        if (path.read_text() if path.exists() else "") != text:
            click.echo(f"{path.name} is stale: run `runledger openapi`", err=True)
            sys.exit(1)
        click.echo(f"{path.name} is current")
        return
    path.write_text(text)
    click.echo(f"wrote {path}")


main.add_command(exporter_command)
main.add_command(cost_group)
main.add_command(pricing_group)
main.add_command(spool_group)
main.add_command(dashboards_group)
main.add_command(quality_group)
main.add_command(alerts_group)
tenant.add_command(tenant_notify)

if __name__ == "__main__":
    main()
