"""``runledger spool ...``: list the records an agent's spool dead-lettered, queue them again."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from runledger.sdk._config import Settings
from runledger.sdk._spool import Spool

__all__ = ["spool_group"]

_SPOOL_OPTION = click.option(
    "--spool",
    "spool_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The spool file (default RUNLEDGER_SPOOL_PATH or $RUNLEDGER_HOME/spool/events.db).",
)


@contextmanager
def _open(spool_path: Path | None) -> Iterator[Spool]:
    path = spool_path or Settings.from_env().spool_path
    if not path.is_file():
        raise click.UsageError(f"no spool at {path}; pass --spool or set RUNLEDGER_SPOOL_PATH")
    spool = Spool(path, owner=f"cli-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield spool
    finally:
        spool.close()


def _answer(errors: str) -> str:
    """Render a dead letter's reasons: ``HTTP 500: body`` or ``field: message``."""
    try:
        items: list[Any] = json.loads(errors)
    except ValueError:
        return errors
    return "; ".join(
        f"HTTP {e['status']}: {e.get('message', '')}"
        if "status" in e
        else f"{e.get('field', '')}: {e.get('message', '')}".lstrip(": ")
        for e in items
        if isinstance(e, dict)
    )


@click.group("spool")
def spool_group() -> None:
    """The SDK's local spool: records the ledger rejected or failed on."""


@spool_group.command("dead-letters")
@_SPOOL_OPTION
def dead_letters_command(spool_path: Path | None) -> None:
    """List the dead-lettered records with the ledger's answer."""
    from rich.console import Console
    from rich.table import Table

    with _open(spool_path) as spool:
        dead = spool.dead_letters()
        path = spool.path
    console = Console()
    if not dead:
        console.print(f"no dead letters in {path}", highlight=False)
        return
    table = Table("event id", "type", "failed at (UTC)", "answer")
    table.columns[0].no_wrap = True
    for d in dead:
        failed = datetime.fromtimestamp(d["failed_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(d["record_id"] or f"(spool id {d['id']})", d["type"], failed,
                      _answer(d["errors"]))  # fmt: skip
    console.print(table)
    console.print(
        f"{len(dead)} dead letter(s) in {path}; queue them again with "
        "`runledger spool resend EVENT_ID` or `runledger spool resend --all`",
        highlight=False,
    )


@spool_group.command("resend")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "resend_all", is_flag=True, help="Queue every dead letter again.")
@_SPOOL_OPTION
def resend_command(event_ids: tuple[str, ...], resend_all: bool, spool_path: Path | None) -> None:
    """Queue dead letters again; a running agent (or the next one) sends them."""
    if not event_ids and not resend_all:
        raise click.UsageError("name the events to resend, or pass --all")
    with _open(spool_path) as spool:
        dead = spool.dead_letters()
        by_id = {d["record_id"]: d["id"] for d in dead}
        unknown = [e for e in event_ids if e not in by_id]
        if unknown:
            raise click.UsageError(
                f"no dead letter with id {unknown[0]!r} in {spool.path}; "
                "`runledger spool dead-letters` lists them"
            )
        ids = [d["id"] for d in dead] if resend_all else [by_id[e] for e in event_ids]
        moved = spool.resend(ids)
        click.echo(f"queued {moved} dead letter(s) again in {spool.path}")
