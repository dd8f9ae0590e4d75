"""The tailer and collector in-process: start position, ordering, look-ups, config errors."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from _support import event
from runledger.cli import main
from runledger.events import validate_batch
from runledger.exporter import EventTailer, ExporterConfig, LedgerCollector, load_config
from runledger.store import Database, Ingestor


def _ingest(db: Database, events: list[dict[str, Any]]) -> None:
    results = Ingestor(db).ingest(validate_batch(events))  # type: ignore[arg-type]
    assert all(r.status == "accepted" for r in results), results


_BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def _at(seconds: float) -> str:
    return (_BASE + timedelta(seconds=seconds)).isoformat()


def test_start_at_end_skips_history_and_beginning_replays_it(
    db: Database, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme")
    _ingest(db, [event("run_started", run_id="old")])
    late, replay = CollectorRegistry(), CollectorRegistry()
    from_end = EventTailer(db, config=ExporterConfig(start_at="end"), registry=late)
    from_start = EventTailer(db, config=ExporterConfig(start_at="beginning"), registry=replay)
    assert from_end.poll() == 0
    assert from_start.poll() == 1
    _ingest(db, [event("run_started", run_id="new")])
    assert from_end.poll() == 1
    labels = {"tenant": "acme", "phase": "build", "role": "implementer"}
    assert late.get_sample_value("runledger_runs_started_total", labels) == 1
    assert from_start.poll() == 1
    assert replay.get_sample_value("runledger_runs_started_total", labels) == 2


def test_small_batches_read_every_event_once_in_order(
    db: Database, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme")
    _ingest(db, [event("run_started", run_id=f"r{i}", occurred_at=_at(i)) for i in range(7)])
    registry = CollectorRegistry()
    tailer = EventTailer(db, config=ExporterConfig(start_at="beginning", batch_size=2),
                         registry=registry)  # fmt: skip
    assert tailer.poll(max_batches=2) == 4
    assert tailer.poll() == 3
    assert tailer.poll() == 0
    labels = {"tenant": "acme", "phase": "build", "role": "implementer"}
    assert registry.get_sample_value("runledger_runs_started_total", labels) == 7


def test_time_to_gate_uses_the_latest_entry_and_targets_per_phase(
    db: Database, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme")
    _ingest(db, [
        event("phase_entered", phase="plan", occurred_at=_at(0)),
        event("phase_advanced", phase="plan", occurred_at=_at(50), payload={"to_phase": "build"}),
        event("phase_entered", phase="build", occurred_at=_at(60)),  # re-entered: counts
        event("phase_advanced", phase="build", occurred_at=_at(100)),
        event("phase_advanced", phase="ship", project_id="proj-2", occurred_at=_at(100)),
    ])  # fmt: skip
    registry = CollectorRegistry()
    config = ExporterConfig(start_at="beginning", phase_targets_seconds={"plan": 30},
                            default_phase_target_seconds=45)  # fmt: skip
    EventTailer(db, config=config, registry=registry).poll()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"tenant": "acme", **labels})

    assert value("runledger_phase_time_to_gate_seconds_sum", phase="plan") == 50
    assert value("runledger_phase_time_to_gate_seconds_sum", phase="build") == 40
    within = "runledger_phase_advances_within_target_total"
    assert value(within, phase="plan", playbook="none") == 0  # 50 s > 30 s target
    assert value(within, phase="build", playbook="none") == 1  # 40 s <= 45 s default
    # An advance whose entry the ledger never saw is counted but not timed.
    assert value("runledger_phase_advances_total", phase="ship", playbook="none") == 1
    assert value(within, phase="ship", playbook="none") == 0
    assert value("runledger_phase_time_to_gate_seconds_count", phase="ship") is None


def test_recovery_time_runs_from_first_failure_since_last_success(
    db: Database, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme")
    _ingest(db, [
        event("run_finished", run_id="a", occurred_at=_at(0)),
        event("run_failed", run_id="b", occurred_at=_at(10), payload={"reason": "x"}),
        event("run_failed", run_id="c", occurred_at=_at(20), payload={"reason": "y"}),
        event("run_finished", run_id="d", occurred_at=_at(70)),
        event("run_finished", run_id="e", occurred_at=_at(90)),  # nothing to recover from
    ])  # fmt: skip
    registry = CollectorRegistry()
    EventTailer(db, config=ExporterConfig(start_at="beginning"), registry=registry).poll()
    assert registry.get_sample_value("runledger_failure_recovery_seconds_count",
                                     {"phase": "build"}) == 1  # fmt: skip
    assert registry.get_sample_value("runledger_failure_recovery_seconds_sum",
                                     {"phase": "build"}) == 60  # fmt: skip


def test_collector_yields_nothing_before_its_first_refresh(
    db: Database, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme", cap="8")
    registry = CollectorRegistry()
    collector = LedgerCollector(db, config=ExporterConfig(), registry=registry)
    assert registry.get_sample_value("runledger_tenant_daily_cap_usd", {"tenant": "acme"}) is None
    collector.refresh()
    assert registry.get_sample_value("runledger_tenant_daily_cap_usd", {"tenant": "acme"}) == 8


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = load_config()
    assert defaults.stuck_after_seconds == 48 * 3600
    assert defaults.phase_target("nowhere") == defaults.default_phase_target_seconds
    path = tmp_path / "exporter.yml"
    path.write_text("phase_targets_seconds:\n  build: 7\npoll_interval_seconds: 0.5\n")
    config = load_config(path)
    assert config.phase_target("build") == 7
    assert config.phase_target("publish") == defaults.phase_target("publish")
    assert config.poll_interval_seconds == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("poll_interval_seconds: -1\n", "poll_interval_seconds: must be > 0"),
        ("stuck_after: 3\n", "stuck_after: is not a known field"),
        ("phase_targets_seconds:\n  build: 0\n", "phase_targets_seconds.build: must be > 0"),
        ("start_at: middle\n", "start_at: Input should be 'end' or 'beginning'"),
        ("- a list\n", "bad.yml: the top level must be a mapping"),
        ("a: [unclosed\n", "bad.yml is not valid YAML"),
    ],
)
def test_config_errors_name_the_file_and_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.yml") as info:
        load_config(path)
    assert message in str(info.value)


def test_cli_rejects_a_bad_config_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("batch_size: 0\n")
    result = CliRunner().invoke(main, ["exporter", "--config", str(path)])
    assert result.exit_code == 2
    assert f"exporter config file {path}: batch_size: must be >= 1" in result.output
    missing = CliRunner().invoke(main, ["exporter", "--config", str(tmp_path / "nope.yml")])
    assert missing.exit_code == 2 and "cannot read exporter config file" in missing.output


def test_cli_names_a_port_already_in_use(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNLEDGER_DATABASE_URL", db_url)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["exporter", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_openmetrics_scrape_equals_the_library_default_bytes(
    db: Database, make_tenant: Callable[..., str]
) -> None:
    from prometheus_client.openmetrics.exposition import generate_latest

    from runledger.exporter import Exporter

    make_tenant("acme")
    _ingest(db, [
        event("run_queued", run_id="a", occurred_at=_at(0)),
        event("run_started", run_id="a", occurred_at=_at(4), trace_id="ab" * 16),
        event("run_finished", run_id="a", occurred_at=_at(9), model="gpt-a", cost_usd="0.5"),
    ])  # fmt: skip
    registry = CollectorRegistry()
    exporter = Exporter(db, ExporterConfig(start_at="beginning"), registry=registry)
    assert exporter.run_once()
    port = exporter.serve(0)
    accept = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
    try:
        resp = requests.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={**accept, "Accept-Encoding": "gzip"},
            timeout=10,
            stream=True,
        )
        compressed = resp.raw.read(decode_content=False)
        plain = requests.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={**accept, "Accept-Encoding": "identity"},
            timeout=10,
        )
    finally:
        exporter.stop()
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    # Compressed (at the exporter's own level) only for clients that accept gzip.
    assert resp.headers["Content-Encoding"] == "gzip"
    assert int(resp.headers["Content-Length"]) == len(compressed)
    served_text = gzip.decompress(compressed).decode()
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Content-Type"] == resp.headers["Content-Type"]

    def stable(text: str) -> list[str]:
        return [line for line in text.splitlines() if "gauges_age_seconds " not in line]

    served, default = stable(served_text), stable(generate_latest(registry).decode())
    assert served == default
    assert stable(plain.text) == default
    assert any('trace_id="' + "ab" * 16 + '"' in line for line in served)
