"""``runledger cost ...``: projection with budget gates, cap status, raises, lease upkeep."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import click
import yaml

from runledger._click import usd
from runledger.store import CapAdmin, Database, LeaseStore, resolve_database_url
from runledger.validation import ConfigError

__all__ = ["cost_group", "pricing_group"]


def _database() -> Database:
    return Database(resolve_database_url(), max_size=2).open(wait=True)


def _cap_admin() -> CapAdmin:
    return CapAdmin(_database())


@click.group("cost")
def cost_group() -> None:
    """Cost controls: projection and budget gates, tenant caps and raises."""


@cost_group.command("project")
@click.argument("plan", type=click.Path(exists=True, dir_okay=False))
@click.option("--pricing", "pricing_path", type=click.Path(exists=True, dir_okay=False),
              help="Pricing YAML (default: the packaged table).")  # fmt: skip
@click.option("--tenant", default=None, help="Apply this tenant's price overrides.")
@click.option("--budget-usd", callback=usd, default=None, help="Block at 100%, warn at 90%.")
@click.option("--budget-tokens", type=click.IntRange(min=0), default=None,
              help="Token budget: block at 100%, warn at 90%.")  # fmt: skip
@click.option("--fail-on-warn", is_flag=True, help="Exit 4 on a 90% warning (default: exit 0).")
@click.option("--json", "as_json", is_flag=True, help="Print the projection as JSON.")
def project_cmd(
    plan: str, pricing_path: str | None, tenant: str | None, budget_usd: Decimal | None,
    budget_tokens: int | None, fail_on_warn: bool, as_json: bool,
) -> None:  # fmt: skip
    """Project a run's cost from a PLAN file, then apply the budget gates.

    Exit codes: 0 within budget (or a warning), 3 blocked, 4 warning with --fail-on-warn,
    2 bad input (unknown model, invalid plan or pricing file).
    """
    from runledger.cost.pricing import PricingTable, default_pricing
    from runledger.cost.projection import (
        EXIT_BUDGET_BLOCKED,
        EXIT_BUDGET_WARNING,
        check_budget,
        load_plan,
        project,
    )

    try:
        pricing = PricingTable.load(pricing_path) if pricing_path else default_pricing()
        projection = project(load_plan(plan), pricing, tenant_id=tenant)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    verdict = check_budget(projection, budget_usd=budget_usd, budget_tokens=budget_tokens)
    if as_json:
        out = projection.as_dict()
        out["budget"] = {"level": verdict.level, "messages": verdict.messages}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(projection.render())
    for message in verdict.messages:
        click.echo(message, err=True)
    if verdict.level == "block":
        click.echo("Run aborted to prevent a budget overrun.", err=True)
        sys.exit(EXIT_BUDGET_BLOCKED)
    if verdict.level == "warn" and fail_on_warn:
        sys.exit(EXIT_BUDGET_WARNING)


@cost_group.command("status")
@click.argument("tenant_id")
def status_cmd(tenant_id: str) -> None:
    """Show a tenant's daily cap today: cap in force, spend, reserved, 80%/100% marks."""
    status = _cap_admin().status(tenant_id)
    if status is None:
        raise click.UsageError(f"unknown tenant {tenant_id!r}")
    click.echo(json.dumps(status.as_dict(), indent=2))


@cost_group.command("raise")
@click.argument("tenant_id")
@click.option("--cap-usd", callback=usd, default=None, help="The new daily cap in dollars.")
@click.option("--reason", required=True, help="Why the cap changes (audited).")
@click.option("--author", required=True, help="Who changes it (audited).")
@click.option("--hours", type=click.IntRange(1, 24 * 90), default=None,
              help="Make it temporary: revert after this many hours.")  # fmt: skip
@click.option("--temporary", is_flag=True,
              help="The one-click raise: 72 hours, x1.5 unless --cap-usd.")  # fmt: skip
def raise_cmd(
    tenant_id: str, cap_usd: Decimal | None, reason: str, author: str, hours: int | None,
    temporary: bool,
) -> None:  # fmt: skip
    """Change TENANT_ID's daily cap (permanent unless --hours or --temporary); audited."""
    from datetime import timedelta

    admin = _cap_admin()
    try:
        if temporary:
            change = admin.temporary_raise(
                tenant_id, reason=reason, author=author, author_role="cli", new_cap_usd=cap_usd
            )
        else:
            if cap_usd is None:
                raise click.UsageError("--cap-usd is required unless --temporary")
            expires = None if hours is None else admin.now() + timedelta(hours=hours)
            change = admin.change_cap(
                tenant_id, new_cap_usd=cap_usd, reason=reason, author=author, author_role="cli",
                expires_at=expires,
            )  # fmt: skip
    except (ValueError, LookupError) as exc:
        raise click.UsageError(str(exc)) from None
    until = f" until {change.expires_at.isoformat()}" if change.expires_at else ""
    click.echo(
        f"tenant {tenant_id}: daily cap ${change.old_value_usd:.2f} -> "
        f"${change.new_value_usd:.2f}{until} (raise {change.raise_id}, audited)"
    )


@cost_group.command("expire-raises")
def expire_raises_cmd() -> None:
    """Mark temporary raises past their expiry as reverted (they stop applying by themselves)."""
    expired = _cap_admin().expire_raises()
    for change in expired:
        click.echo(
            f"tenant {change.tenant_id}: raise {change.raise_id} expired; cap back to "
            f"${change.old_value_usd:.2f}"
        )
    click.echo(f"{len(expired)} raise(s) expired")


@cost_group.command("reclaim")
def reclaim_cmd() -> None:
    """Expire budget leases whose holders stopped renewing them; return their reservations."""
    click.echo(f"reclaimed {LeaseStore(_database()).reclaim_expired()} lease(s)")


@cost_group.command("check-config")
@click.option("--pricing", "pricing_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--routing", "routing_path", type=click.Path(exists=True, dir_okay=False))
def check_config_cmd(pricing_path: str | None, routing_path: str | None) -> None:
    """Validate a pricing and/or routing file; exit 2 naming the offending key."""
    from runledger.cost.pricing import PricingTable, default_pricing
    from runledger.cost.routing import RoutingTable

    try:
        pricing = PricingTable.load(pricing_path) if pricing_path else default_pricing()
        click.echo(f"pricing ok: {len(pricing.models())} models ({pricing.source})")
        if routing_path:
            routing = RoutingTable.load(routing_path, pricing=pricing)
            click.echo(f"routing ok: {len(list(routing.roles()))} roles ({routing_path})")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group("pricing")
def pricing_group() -> None:
    """Review and update the pricing table."""


@pricing_group.command("import")
@click.argument("price_list", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--pricing",
    "pricing_path",
    type=click.Path(exists=True, dir_okay=False),
    help="The pricing YAML to compare with (default: the table shipped with runledger).",
)
@click.option(
    "--add",
    "add",
    multiple=True,
    metavar="MODEL",
    help="Also add this model of the price list (repeatable).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the updated table here (comments are not kept) for review.",
)
def pricing_import_cmd(
    price_list: str, pricing_path: str | None, add: tuple[str, ...], output: str | None
) -> None:
    """Print what a LiteLLM price list (model_prices_and_context_window.json) would change.

    Exit status: 0 no change, 1 changes shown, 2 bad input.
    """
    from importlib import resources

    from runledger.cost.pricing import PricingError
    from runledger.cost.pricing_import import import_prices

    ref = resources.files("runledger.cost").joinpath("pricing.yml")
    with resources.as_file(ref) as shipped:
        table = Path(pricing_path) if pricing_path else shipped
        try:
            report = import_prices(table, price_list, add=add)
        except PricingError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        diff = report.diff(str(pricing_path or "runledger/cost/pricing.yml"), price_list)
    click.echo(diff, nl=False)
    click.echo(
        f"{len(report.updated)} model(s) with new prices, {len(report.added)} added, "
        f"{len(report.unmatched)} not in the list"
        + (f" ({', '.join(report.unmatched)})" if report.unmatched else "")
    )
    if output:
        Path(output).write_text(yaml.safe_dump(report.after, sort_keys=False, width=100))
        click.echo(f"wrote {output}: review it, then use it with --pricing or ship it")
    sys.exit(1 if diff else 0)
