"""POST /v1/events redacts free text on arrival: a client that bypasses the SDK cannot store a
secret either, on the fast path (the body stored as sent) and the slow path alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from _support import event
from _support.corpus import ORDINARY, SECRETS
from _support.redact_corpus import (
    BASE64_CREDENTIALS,
    CLOUD_SECRETS,
    NATIONAL_PHONES,
    URL_CREDENTIALS,
    WEBHOOKS,
)
from runledger.events import parse_batch_json

SQL = Callable[..., list[tuple[Any, ...]]]

# (text, fragments that must not be stored). A payload string with an "@" in it that looks
# like an e-mail address (an address, credentials in a URL) is refused outright (tested in
# test_ingest.py), so such texts are sent only where they are redacted (artifact_path).
_ALL: list[tuple[str, tuple[str, ...]]] = [
    *((text, (value,)) for _, text, value in SECRETS),
    *((text, fragments) for cases in (CLOUD_SECRETS, URL_CREDENTIALS, WEBHOOKS,
                                       NATIONAL_PHONES, BASE64_CREDENTIALS)
      for _, text, fragments in cases),
]  # fmt: skip
CASES = [(text, fragments) for text, fragments in _ALL if "@" not in text]
AT_SIGN = [(text, fragments) for text, fragments in _ALL if "@" in text]


@pytest.fixture
def agent(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme", "10")
    return {"Authorization": f"Bearer {make_token('agent', 'acme')}"}


def one_line(text: str) -> str:
    return " ".join(text.split())


def events_holding(text: str, n: int) -> list[dict[str, Any]]:
    """Events of run ``run-<n>`` carrying ``text`` in every free-text field of the spec."""
    line = one_line(text)
    run = {"run_id": f"run-{n}"}
    art = {"artifact_path": line, "artifact_version": 1}
    return [
        event("run_started", **run, payload={"note": text, "nested": {"list": [text]}}),
        event("validation_failed", **run, **art,
              payload={"reason": line, "rule": line[:128], "detail": text}),
        event("user_override", **run, payload={"action": line}),
        event("impersonation_started", **run, payload={"actor": "support-7", "reason": line}),
        event("external_call", **run, payload={"service": "crm", "summary": line}),
        event("publish_done", **run, **art, role="publisher", payload={"instructions": line}),
        event("run_failed", **run, payload={"reason": line, "error_class": line[:128]}),
    ]  # fmt: skip


def stored_text(sql: SQL) -> str:
    rows = sql("SELECT payload::text || coalesce(artifact_path, '') FROM events")
    rows += sql("SELECT coalesce(error, '') FROM runs")
    rows += sql("SELECT reason FROM failures")
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_secrets_in_free_text_are_redacted_before_they_are_stored(
    client: Any, agent: dict[str, str], sql: SQL, path: str
) -> None:
    events = [ev for n, (text, _) in enumerate(CASES) for ev in events_holding(text, n)]
    events += [
        event("artifact_written", run_id="at", artifact_path=text, artifact_version=1)
        for text, _ in AT_SIGN
    ]
    if path == "slow":  # one invalid event sends the batch through per-event validation
        events.append(event("phase_entered", phase="not a slug!"))
    for i in range(0, len(events), 1000):
        resp = client.post("/v1/events", json={"events": events[i : i + 1000]}, headers=agent)
        assert resp.status_code == 200
        assert resp.json["rejected"] == (path == "slow" and i + 1000 >= len(events)), resp.json
    blob = stored_text(sql)
    leaked = [f for _, fragments in CASES + AT_SIGN for f in fragments if f in blob]
    assert leaked == []
    stored = sql("SELECT count(*) FROM events")[0][0]
    assert stored == len(events) - (path == "slow")
    for kind in ("openai_key", "aws_secret_key", "url_credentials", "webhook_url", "phone",
                 "base64_credentials", "email", "password"):  # fmt: skip
        assert f"[REDACTED:{kind}" in blob, kind


def test_ordinary_text_is_stored_as_sent(client: Any, agent: dict[str, str], sql: SQL) -> None:
    events = [ev for n, text in enumerate(ORDINARY) for ev in events_holding(text, n)]
    body = orjson.dumps({"events": events})
    parsed = parse_batch_json(body)
    assert parsed is not None and parsed.as_sent  # the body itself goes to PostgreSQL
    resp = client.post("/v1/events", data=body, headers=agent, content_type="application/json")
    assert resp.json["accepted"] == len(events)
    reasons = {r[0] for r in sql("SELECT payload->>'reason' FROM events WHERE type = 'run_failed'")}
    assert reasons == {one_line(t) for t in ORDINARY}
    assert "[REDACTED" not in stored_text(sql)


def test_a_body_holding_a_secret_is_not_stored_as_sent() -> None:
    plain = event("run_failed", payload={"reason": "model timeout after 60s"})
    secret = event("run_failed", payload={"reason": "db password=Tr0ub4dor3x failed"})
    parsed = parse_batch_json(orjson.dumps({"events": [plain, secret]}))
    assert parsed is not None and not parsed.as_sent
    assert parsed.events[1].payload.reason == "db password=[REDACTED:password] failed"
    assert parsed.events[0].payload.reason == "model timeout after 60s"


def test_a_long_reason_is_redacted_then_cut_to_the_limit(
    client: Any, agent: dict[str, str], sql: SQL
) -> None:
    # A phone number is shorter than its marker: redacting a 499-character reason makes it
    # longer than 500; the server cuts it after redaction instead of refusing it.
    reason = "x" * 485 + " 020 7946 0958"
    assert len(reason) == 499
    resp = client.post(
        "/v1/events", json={"events": [event("run_failed", payload={"reason": reason})]},
        headers=agent,
    )  # fmt: skip
    assert resp.json["accepted"] == 1, resp.json
    [(stored,)] = sql("SELECT payload->>'reason' FROM events")
    assert len(stored) <= 500 and stored.endswith("…") and "7946" not in stored


@pytest.mark.parametrize(
    ("given", "stored"),
    [("lisbon", "Lisbon"), ("São Paulo, Brazil", "Sao Paulo"),
     ("221B Baker Street, London", "[REDACTED:city]"),
     ("Flat 3, 14 Rue de Rivoli", "[REDACTED:city]")],
)  # fmt: skip
def test_a_demo_city_is_stored_only_when_it_is_a_known_city(
    client: Any, agent: dict[str, str], sql: SQL, given: str, stored: str
) -> None:
    demo = event("demo_started", payload={"demo_id": "d-1", "city": given})
    resp = client.post("/v1/events", json={"events": [demo]}, headers=agent)
    assert resp.json["accepted"] == 1, resp.json
    assert sql("SELECT payload->>'city' FROM events") == [(stored,)]
