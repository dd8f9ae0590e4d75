"""``runledger dashboards``: write the dashboards' JSON (or check that it is current)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from runledger import _env

__all__ = ["dashboards_group"]


@click.group("dashboards")
def dashboards_group() -> None:
    """Grafana dashboards generated from code (docs/grafana.md)."""


@dashboards_group.command("build")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("grafana"),
    show_default=True,
    help="The grafana/ folder of the repository.",
)
@click.option(
    "--console-url",
    default=None,
    help=f"Console base URL for the dashboards' links (default: ${_env.CONSOLE_URL} or "
    "http://localhost:8480).",
)
@click.option("--check", is_flag=True, help="Write nothing; fail when a file is out of date.")
def build_command(out: Path, console_url: str | None, check: bool) -> None:
    """Write grafana/dashboards/*.json and grafana/owners/dashboards/*.json."""
    from runledger.dashboards import DEFAULT_CONSOLE_URL, build, render, write

    url = console_url or os.environ.get(_env.CONSOLE_URL) or DEFAULT_CONSOLE_URL
    if check:
        stale = [
            name
            for name, model in build(url).items()
            if not (out / name).is_file() or (out / name).read_text() != render(model)
        ]
        if stale:
            raise click.ClickException(
                "out of date: " + ", ".join(stale) + " (run `runledger dashboards build`)"
            )
        click.echo("dashboards are up to date")
        return
    for path in write(out, url):
        click.echo(f"wrote {path}")
