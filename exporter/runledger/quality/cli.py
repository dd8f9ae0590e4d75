"""``runledger quality sample|drift|unfreeze|scheduler``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from runledger._click import cli_actor

__all__ = ["quality_group"]


def _day(_ctx: Any, _param: Any, value: str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"must be a day as YYYY-MM-DD, got {value!r}") from None


def _config(path: str | None) -> Any:
    from runledger.quality.config import QualityConfigError, load_quality_config

    try:
        return load_quality_config(Path(path) if path else None)
    except QualityConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _database() -> Any:
    from runledger.store import Database, resolve_database_url

    return Database(resolve_database_url(), max_size=2).open(wait=True)


_CONFIG = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Quality configuration (default RUNLEDGER_QUALITY_CONFIG).",
)  # fmt: skip
_DAY = click.option(
    "--day", callback=_day, default=None, help="UTC day as YYYY-MM-DD (default: today)."
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group("quality")
def quality_group() -> None:
    """Quality jobs: proof sampling (can freeze a Publisher), drift checks, unfreeze."""


@quality_group.command("sample")
@_DAY
@click.option("--seed", type=int, default=None, help="Make the sample deterministic.")
@click.option(
    "--size",
    type=click.IntRange(1, 10_000),
    default=None,
    help="At most this many proofs per playbook (overrides the configuration).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Share of each playbook's proofs to sample (overrides the configuration).",
)
@click.option("--playbook", "playbooks", multiple=True, help="Only this playbook (repeatable).")
@_CONFIG
@_JSON
def sample_cmd(
    day: date, seed: int | None, size: int | None, rate: float | None,
    playbooks: tuple[str, ...], config_path: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Re-validate a random sample of the day's proofs per playbook in strict mode.

    A playbook whose sampled failure rate exceeds its threshold gets its Publisher frozen.
    Exits 1 when the Validator raised on some proof (its results say which).
    """
    from runledger.quality.sampling import NoValidatorError, run_sample
    from runledger.quality.validators import ValidatorError

    config = _config(config_path)
    db = _database()
    try:
        report = run_sample(
            db, config, day, seed=seed, size=size, rate=rate,
            playbooks=[p.lower() for p in playbooks] or None,
        )  # fmt: skip
    except (NoValidatorError, ValidatorError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.close()
    errors = sum(p.count("error") for p in report.playbooks)
    if as_json:
        click.echo(json.dumps(_sample_json(report), indent=2))
        sys.exit(1 if errors else 0)
    click.echo(f"proof sample of {day.isoformat()} (seed {seed if seed is not None else 'random'})")
    if not report.playbooks:
        click.echo("no proofs were requested that day")
    for p in report.playbooks:
        rate_text = f"{p.failure_rate:.0%}" if p.failure_rate is not None else "-"
        if p.froze is not None:
            action = "FROZE the Publisher"
        elif p.frozen_already is not None:
            action = "over threshold; Publisher already frozen"
        elif p.lifted_today is not None:
            action = (
                f"over threshold; not frozen again: {p.lifted_today.lifted_by} lifted this "
                f"day's freeze ({p.lifted_today.lift_reason})"
            )
        elif p.over_threshold:
            action = "over threshold"
        else:
            action = "ok"
        click.echo(
            f"  {p.playbook}: {p.proofs} proofs, {p.eligible} with stored content, "
            f"{p.sampled} sampled: {p.count('fail')} failed, {p.count('error')} errors; "
            f"failure rate {rate_text} (threshold {p.settings.threshold:.0%}, validator "
            f"{p.validator}): {action}"
        )
        for r in p.results:
            if r.status != "pass":
                click.echo(f"    {r.status.upper()} {r.artifact_path}@{r.artifact_version} "
                           f"(proof {r.proof_id}): {r.reason}")  # fmt: skip
    sys.exit(1 if errors else 0)


def _sample_json(report: Any) -> dict[str, Any]:
    return {
        "day": report.day.isoformat(),
        "seed": report.seed,
        "playbooks": [
            {
                "playbook": p.playbook,
                "validator": p.validator,
                **p.summary(),
                "froze": p.froze.as_dict() if p.froze else None,
                "results": [
                    {
                        "proof_id": r.proof_id,
                        "tenant_id": r.tenant_id,
                        "artifact_path": r.artifact_path,
                        "artifact_version": r.artifact_version,
                        "status": r.status,
                        "reason": r.reason,
                    }
                    for r in p.results
                ],
            }
            for p in report.playbooks
        ],
    }


@quality_group.command("drift")
@_DAY
@_CONFIG
@_JSON
def drift_cmd(day: date, config_path: str | None, as_json: bool) -> None:
    """Compare the day's Implementer outputs per playbook with the rolling baseline.

    The report (also stored in quality_drift) says what changed and by how much.
    """
    from runledger.quality.drift import run_drift

    config = _config(config_path)
    settings = config.drift
    db = _database()
    try:
        report = run_drift(db, settings, day)
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(
            {"day": day.isoformat(), "skipped": report.skipped,
             "results": [_row(r) for r in report.rows]},
            indent=2, default=str,
        ))  # fmt: skip
        return
    click.echo(
        f"drift check of {day.isoformat()}: {settings.role} outputs against the "
        f"{settings.baseline_days} days before; {len(report.rows)} tests, "
        f"{settings.correction.upper()} correction at {settings.false_alarm_rate:g}"
    )
    drifted = report.drifted
    for r in drifted:
        click.echo(f"  DRIFT {r.playbook}: {r.summary}")
    checked = sorted({r.playbook for r in report.rows})
    for playbook in checked:
        if not any(r.playbook == playbook for r in drifted):
            n = sum(1 for r in report.rows if r.playbook == playbook)
            click.echo(f"  ok    {playbook}: no drift in {n} features")
    for playbook, why in report.skipped.items():
        click.echo(f"  skip  {playbook}: {why}")
    if not report.rows and not report.skipped:
        click.echo("  no outputs with stored content in the window")


def _row(r: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(r)


@quality_group.command("unfreeze")
@click.argument("playbook")
@click.option("--reason", required=True, help="Why the Publisher may ship again (audited).")
@click.option("--author", default=None, help="Who unfreezes it (default: cli:<user>).")
def unfreeze_cmd(playbook: str, reason: str, author: str | None) -> None:
    """Lift a playbook's Publisher freeze (audited)."""
    from runledger.store.quality import unfreeze_publisher

    if not reason.strip():
        raise click.BadParameter("must not be empty", param_hint="--reason")
    db = _database()
    try:
        with db.connection() as conn:
            lifted = unfreeze_publisher(
                conn, playbook=playbook.lower(), actor=author or cli_actor(), role="admin",
                reason=reason.strip(),
            )  # fmt: skip
    finally:
        db.close()
    if lifted is None:
        raise click.ClickException(f"the Publisher of playbook {playbook!r} is not frozen")
    when = lifted.frozen_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    click.echo(
        f"unfroze the Publisher of playbook {lifted.playbook} (frozen {when} UTC by "
        f"{lifted.frozen_by}: {lifted.reason})"
    )


@quality_group.command("scheduler")
@_CONFIG
@click.option("--run-now", "run_now", multiple=True, type=click.Choice(["sample", "drift",
              "retention"]), help="Also run this job once at start (repeatable).")  # fmt: skip
def scheduler_cmd(config_path: str | None, run_now: tuple[str, ...]) -> None:
    """Run the daily jobs (sample, drift, retention) on their cron schedules until stopped."""
    import logging

    from runledger.quality.scheduler import build_scheduler, run_job
    from runledger.store import resolve_database_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = _config(config_path)
    url = resolve_database_url()
    for name in run_now:
        try:
            click.echo(run_job(name, url, config))
        except Exception as exc:  # the schedule still starts; its next run tries again
            click.echo(f"{name} failed: {exc}", err=True)
    scheduler = build_scheduler(url, config)
    for job in scheduler.get_jobs():
        click.echo(f"scheduled {job.name}: {job.trigger}")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
