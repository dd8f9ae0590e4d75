"""A record the ledger fails on: isolated by splitting, dead-lettered with the answer, listed
and re-sent by the CLI, never stored twice; a failing service dead-letters nothing."""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from werkzeug.serving import make_server

from _support import event
from runledger.cli import main
from runledger.control import create_app
from runledger.sdk import DeliveryOptions, Ledger
from runledger.sdk._sender import Sender
from runledger.sdk._spool import Spool

Sql = Callable[..., list[tuple[Any, ...]]]
SECRET = "sk-proj-4fT9qLm2Xv8RzK1wP0sYbN7c"


class FaultyLedger:
    """The real control service (and database) behind a fault: requests whose body holds
    one of ``poison`` answer 500 (``after``: once the real app has handled them), every
    request answers ``status`` while it is set."""

    def __init__(self, db_url: str) -> None:
        self.app = create_app({"DATABASE_URL": db_url})
        self.poison: set[str] = set()
        self.after = False
        self.status: int | None = None
        self.requests: list[tuple[float, int, bool]] = []  # (time, records, held poison)
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        hit = any(p.encode() in body for p in self.poison)
        self.requests.append((time.monotonic(), body.count(b'"event_id"'), hit))
        if self.status is not None:
            start_response(f"{self.status} DOWN", [("Retry-After", "1")])
            return [b'{"error": "down"}']
        if hit:
            if self.after:
                result = self.app(environ, lambda *_a: None)
                b"".join(result)
                getattr(result, "close", lambda: None)()
            start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "application/json")])
            return [json.dumps({"error": f"internal error near token {SECRET}"}).encode()]
        return self.app(environ, start_response)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def faulty(db_url: str) -> Iterator[FaultyLedger]:
    server = FaultyLedger(db_url)
    yield server
    server.close()


def _spool_offline(spool: Path, events: list[dict[str, Any]]) -> list[str]:
    """Spool ``events`` with no ledger URL, as a process that could not deliver them."""
    ledger = Ledger(
        None, delivery=DeliveryOptions(spool_path=spool), environ={"OTEL_SDK_DISABLED": "1"}
    )
    ids = [ledger.emit(e) for e in events]
    ledger.close(timeout=0)
    return ids


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def _stored(sql: Sql) -> dict[str, int]:
    return dict(sql("SELECT event_id::text, count(*) FROM events GROUP BY 1"))


def _queued(n: int, tag: str) -> list[dict[str, Any]]:
    return [event("run_queued", run_id=f"run-{tag}-{i}") for i in range(n)]


def _emit_until_dead_lettered(ledger: Ledger, faulty: FaultyLedger, tag: str) -> list[str]:
    """Emit an event every half second (the other events a suspect needs to be tried
    alone again) until a record is dead-lettered; return their ids."""
    emitted: list[str] = []
    deadline = time.monotonic() + 30
    while not ledger.dead_letters():
        assert time.monotonic() < deadline, faulty.requests
        emitted.append(ledger.emit(event("run_queued", run_id=f"run-{tag}-{len(emitted)}")))
        ledger.flush(0.5)
    return emitted


def test_one_failing_event_is_isolated_dead_lettered_listed_and_resent_once_fixed(
    faulty: FaultyLedger,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    sql: Sql,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool = tmp_path / "spool" / "events.db"
    n = 40
    ids = _spool_offline(spool, _queued(n, "a"))
    poison = ids[29]
    faulty.poison.add(poison)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="runledger.sdk"):
        ledger = make_ledger(faulty.url, agent["token"], delivery=DeliveryOptions(spool_path=spool))
        # Everything else lands, and the batch was split at most about 2*log2(n) times.
        _wait(lambda: len(_stored(sql)) == n - 1, 30, "delivery of the other events")
        assert poison not in _stored(sql)
        splitting = [r for r in faulty.requests if r[1] > 1 and r[2]]
        assert 1 <= len(splitting) <= math.ceil(math.log2(n))
        assert len(faulty.requests) <= 2 * math.ceil(math.log2(n)) + 3
        assert time.monotonic() - started < 15
        # Later events flow past the suspect; each delivery lets it be tried alone again,
        # and the third failure alone in a row dead-letters it.
        later = _emit_until_dead_lettered(ledger, faulty, "b")
    alone = [r for r in faulty.requests if r[1] == 1 and r[2]]
    assert len(alone) >= 3
    assert ledger.flush(10)  # nothing else waits
    assert set(later) <= set(_stored(sql))
    (dead,) = ledger.dead_letters()
    assert (dead["record_id"], dead["type"]) == (poison, "run_queued")
    errors = json.loads(dead["errors"])
    assert errors == [
        {"field": "(response)", "status": 500,
         "message": '{"error": "internal error near token [REDACTED:openai_key]"}'}
    ]  # fmt: skip
    warning = next(r for r in caplog.records if "dead-lettered" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert f"dead-lettered run_queued {poison}" in warning.getMessage()
    assert "answered HTTP 500 for it 3 times in a row while it accepted other records" in (
        warning.getMessage()
    )
    assert f"`runledger spool resend {poison}`" in warning.getMessage()
    assert SECRET not in caplog.text

    runner = CliRunner()
    listed = runner.invoke(main, ["spool", "dead-letters", "--spool", str(spool)])
    assert listed.exit_code == 0, listed.output
    assert poison in listed.output and "run_queued" in listed.output
    assert "HTTP 500" in listed.output and SECRET not in listed.output
    assert "1 dead letter" in listed.output

    faulty.poison.clear()
    resent = runner.invoke(main, ["spool", "resend", poison, "--spool", str(spool)])
    assert resent.exit_code == 0, resent.output
    assert f"queued 1 dead letter(s) again in {spool}" in resent.output
    _wait(lambda: poison in _stored(sql), 10, "delivery of the re-sent event")
    assert ledger.flush(5)
    assert ledger.dead_letters() == []
    stored = _stored(sql)
    assert set(stored) == set(ids) | set(later)
    assert set(stored.values()) == {1}


def test_an_event_stored_before_the_failure_is_dead_lettered_then_resent_as_a_duplicate(
    faulty: FaultyLedger,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    sql: Sql,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool" / "events.db"
    run = {"run_id": "run-cost", "model": "gpt-4.1"}
    finished = event("run_finished", tokens_in=100, tokens_out=10, cost_usd="0.5", **run)
    ids = _spool_offline(spool, [event("run_started", **run), finished, *_queued(6, "c")])
    faulty.poison.add(finished["event_id"])
    faulty.after = True  # the ledger stores the batch, then fails answering
    ledger = make_ledger(faulty.url, agent["token"], delivery=DeliveryOptions(spool_path=spool))
    _emit_until_dead_lettered(ledger, faulty, "d")
    assert ledger.dead_letters()[0]["record_id"] == finished["event_id"]

    faulty.poison.clear()
    result = CliRunner().invoke(main, ["spool", "resend", "--all", "--spool", str(spool)])
    assert result.exit_code == 0, result.output
    assert ledger.flush(10)
    assert ledger.dead_letters() == []
    stored = _stored(sql)
    assert set(ids) <= set(stored) and set(stored.values()) == {1}
    assert sql("SELECT status, tokens_in, cost_usd FROM runs WHERE run_id = 'run-cost'") == [
        ("succeeded", 100, Decimal("0.5"))
    ]


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_service_dead_letters_nothing_and_once_back_only_the_culprit_waits(
    faulty: FaultyLedger,
    agent: dict[str, str],
    make_ledger: Callable[..., Ledger],
    sql: Sql,
    tmp_path: Path,
    status: int,
) -> None:
    spool = tmp_path / "spool" / "events.db"
    ids = _spool_offline(spool, _queued(16, "e"))
    poison = ids[5]
    faulty.poison.add(poison)
    faulty.status = status  # the whole service fails, on every event
    ledger = make_ledger(faulty.url, agent["token"], delivery=DeliveryOptions(spool_path=spool))
    time.sleep(4)
    assert ledger.dead_letters() == []
    assert ledger.pending() == 16
    if status == 503:  # the service said when to come back: no split, no hurry
        assert all(r[1] == 16 for r in faulty.requests)
        gaps = [b[0] - a[0] for a, b in zip(faulty.requests, faulty.requests[1:], strict=False)]
        assert len(faulty.requests) >= 2 and min(gaps) >= 0.95
    faulty.status = None  # back, but still failing on the one event
    ledger.flush(0.5)
    _wait(lambda: len(_stored(sql)) == 15, 40, "delivery of every event but the culprit")
    assert {d["record_id"] for d in ledger.dead_letters()} <= {poison}
    stored = _stored(sql)
    assert set(stored) == set(ids) - {poison} and set(stored.values()) == {1}
    assert ledger.pending() == 1 - len(ledger.dead_letters())


def test_a_dead_letter_is_counted_on_the_meter_provider(
    faulty: FaultyLedger, agent: dict[str, str], tmp_path: Path
) -> None:
    reader = InMemoryMetricReader()
    spool = Spool(tmp_path / "s.db", owner="test")
    events = _queued(4, "m")
    faulty.poison.add(events[1]["event_id"])
    for e in events:
        spool.append("event", json.dumps(e).encode())
    sender = Sender(spool, faulty.url, agent["token"],
                    meter_provider=MeterProvider(metric_readers=[reader]))  # fmt: skip
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while not spool.dead_letters():
            assert time.monotonic() < deadline, faulty.requests
            spool.append("event", json.dumps(_queued(1, f"n{time.monotonic_ns()}")[0]).encode())
            sender.wake()
            time.sleep(0.3)
    finally:
        sender.stop(5)
        spool.close()
    data = reader.get_metrics_data()
    (metric,) = [
        m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "runledger.sdk.dead_letters"
    ]  # fmt: skip
    (point,) = metric.data.data_points
    assert (point.value, dict(point.attributes)) == (1, {"kind": "event"})


def test_the_cli_names_a_missing_spool_and_an_unknown_event(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nowhere.db"
    result = runner.invoke(main, ["spool", "dead-letters", "--spool", str(missing)])
    assert result.exit_code == 2
    assert f"no spool at {missing}; pass --spool or set RUNLEDGER_SPOOL_PATH" in result.output
    spool = tmp_path / "s.db"
    _spool_offline(spool, _queued(1, "f"))
    result = runner.invoke(main, ["spool", "dead-letters", "--spool", str(spool)])
    assert result.exit_code == 0 and "no dead letters in" in result.output
    result = runner.invoke(main, ["spool", "resend", "nope", "--spool", str(spool)])
    assert result.exit_code == 2
    assert "no dead letter with id 'nope'" in result.output
    result = runner.invoke(main, ["spool", "resend", "--spool", str(spool)])
    assert result.exit_code == 2
    assert "name the events to resend, or pass --all" in result.output
