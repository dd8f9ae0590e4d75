"""``runledger quality sample`` and ``unfreeze`` from the command line, on a real ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from _support.quality import post_proofs
from runledger.cli import main

BROKEN = "<html><body><section id='hero'><h1>Acme</h1></section></body></html>"


def _invoke(db_url: str, config: Path | None, *args: str) -> Any:
    env = {"RUNLEDGER_DATABASE_URL": db_url, "RUNLEDGER_QUALITY_CONFIG": str(config or "")}
    return CliRunner().invoke(main, ["quality", *args], env=env)


def test_sample_freezes_and_reports_then_unfreeze_is_audited(
    client: Any, db_url: str, tmp_path: Path, make_tenant: Callable[..., str],
    make_token: Callable[..., str], sql: Callable[..., list[tuple[Any, ...]]],
) -> None:  # fmt: skip
    make_tenant("acme")
    token = make_token("agent", "acme")
    post_proofs(client, token, "acme", "local-business", 10, page=lambda i: BROKEN)
    config = tmp_path / "quality.yml"
    config.write_text("validator: runledger.demo.validator:validate\nsample: {rate: 0.5}\n")
    day = datetime.now(UTC).date().isoformat()

    result = _invoke(db_url, config, "sample", "--day", day, "--seed", "3")
    assert result.exit_code == 0, result.output
    assert f"proof sample of {day} (seed 3)" in result.output
    assert (
        "local-business: 10 proofs, 10 with stored content, 5 sampled: 5 failed, 0 errors; "
        "failure rate 100% (threshold 20%, validator runledger.demo.validator:validate): "
        "FROZE the Publisher"
    ) in result.output
    assert "FAIL acme-q" in result.output
    assert "hero section has no call to action" in result.output

    again = _invoke(db_url, config, "sample", "--day", day, "--seed", "3", "--json")
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert data["playbooks"][0]["failed"] == 5 and data["playbooks"][0]["froze"] is None

    lifted = _invoke(db_url, None, "unfreeze", "Local-Business", "--reason", "template fixed")
    assert lifted.exit_code == 0, lifted.output
    assert lifted.output.startswith("unfroze the Publisher of playbook local-business (frozen ")
    [(actor, role, reason)] = sql(
        "SELECT actor, actor_role, details->>'reason' FROM audit_log"
        " WHERE action = 'publisher.unfreeze'"
    )
    assert actor.startswith("cli:") and (role, reason) == ("admin", "template fixed")
    twice = _invoke(db_url, None, "unfreeze", "local-business", "--reason", "again")
    assert twice.exit_code == 1
    assert "the Publisher of playbook 'local-business' is not frozen" in twice.output


def test_sample_without_a_validator_says_how_to_configure_one(
    client: Any, db_url: str, make_tenant: Callable[..., str], make_token: Callable[..., str]
) -> None:
    make_tenant("acme")
    post_proofs(client, make_token("agent", "acme"), "acme", "blog", 2)
    result = _invoke(db_url, None, "sample")
    assert result.exit_code == 1
    assert "playbook 'blog' has proofs to sample but no Validator is configured" in result.output
    assert "--day" in _invoke(db_url, None, "sample", "--day", "2026-13-01").output
