"""``runledger alerts render`` and ``runledger tenant notify``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runledger._click import cli_actor

__all__ = ["alerts_group", "tenant_notify"]


@click.group("alerts")
def alerts_group() -> None:
    """Alert rules."""


@alerts_group.command("render")
@click.option(
    "--thresholds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("prometheus/thresholds.yml"),
    show_default=True,
    help="The one file of thresholds and for: durations.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prometheus/alerts"),
    show_default=True,
    help="Where the rule files go.",
)
@click.option("--check", is_flag=True, help="Exit 1 when a rule file is stale; write nothing.")
@click.option(
    "--for", "for_override", default=None, help="Use this for: everywhere (tests, benchmarks)."
)
def render(thresholds: Path, out: Path, check: bool, for_override: str | None) -> None:
    """Write prometheus/alerts/<area>.alerts.yml from the thresholds file."""
    from runledger.alert_rules import render_files

    try:
        stale = render_files(thresholds, out, for_override=for_override, check=check)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if check:
        if stale:
            names = ", ".join(p.name for p in stale)
            click.echo(f"stale: {names}: run `runledger alerts render`", err=True)
            sys.exit(1)
        click.echo("alert rule files are current")
        return
    for path in stale:
        click.echo(f"wrote {path}")
    if not stale:
        click.echo("alert rule files are current")


@click.command("notify")
@click.argument("tenant_id")
@click.option("--email", "emails", multiple=True, help="An owner address (repeat for more).")
@click.option("--slack-webhook-url", default=None, help="The tenant's Slack incoming webhook.")
@click.option("--slack/--no-slack", "slack_opt_in", default=None, help="Opt in or out of Slack.")
@click.option("--show", is_flag=True, help="Print the settings; change nothing.")
def tenant_notify(
    tenant_id: str,
    emails: tuple[str, ...],
    slack_webhook_url: str | None,
    slack_opt_in: bool | None,
    show: bool,
) -> None:
    """Set where a tenant's owner alerts go (email addresses, Slack); audited."""
    import psycopg
    from pydantic import ValidationError

    from runledger.control._requests import TenantNotifications
    from runledger.store import resolve_database_url
    from runledger.store.alerting import load_settings, save_settings
    from runledger.store.audit import record_audit
    from runledger.validation import describe, field_errors

    with psycopg.connect(resolve_database_url()) as conn:
        current = load_settings(conn, tenant_id)
        if current is None:
            raise click.UsageError(f"unknown tenant {tenant_id!r}")
        if show:
            public = current.public()
            click.echo(f"owner emails: {', '.join(public['owner_emails']) or '-'}")
            click.echo(f"slack webhook: {public['slack_webhook_url'] or '-'}")
            click.echo(f"slack opt-in: {'yes' if public['slack_opt_in'] else 'no'}")
            return
        wanted = {
            "owner_emails": list(emails) if emails else list(current.owner_emails),
            "slack_webhook_url": slack_webhook_url or current.slack_webhook_url,
            "slack_opt_in": current.slack_opt_in if slack_opt_in is None else slack_opt_in,
        }
        try:
            req = TenantNotifications.model_validate(wanted)
        except ValidationError as exc:
            raise click.UsageError(describe(field_errors(exc))) from None
        if req.slack_opt_in and req.slack_webhook_url is None:
            raise click.UsageError("--slack needs --slack-webhook-url (none is set)")
        saved = save_settings(
            conn, tenant_id, owner_emails=[str(e) for e in req.owner_emails],
            slack_webhook_url=str(req.slack_webhook_url) if req.slack_webhook_url else None,
            slack_opt_in=req.slack_opt_in,
        )  # fmt: skip
        assert saved is not None
        record_audit(
            conn, actor=cli_actor(), role="admin", action="tenant.notifications",
            tenant_id=tenant_id, target=tenant_id,
            details={"owner_emails": len(req.owner_emails),
                     "slack_webhook": req.slack_webhook_url is not None,
                     "slack_opt_in": req.slack_opt_in},
        )  # fmt: skip
    click.echo(
        f"tenant {tenant_id}: {len(saved.owner_emails)} owner address(es),"
        f" Slack {'on' if saved.slack_url else 'off'}"
    )
