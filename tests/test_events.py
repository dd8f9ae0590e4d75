"""The event spec: the checked-in JSON Schema and docs match the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from _support import ROOT
from runledger import events as events_module
from runledger.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    SPEC_EVENT_TYPES,
    event_json_schema,
    has_submicrosecond_times,
    parse_batch_json,
    validate_batch,
)

SCHEMA = ROOT / "exporter" / "runledger" / "events.schema.json"
DOC = ROOT / "docs" / "events.md"


def test_checked_in_schema_is_generated_from_the_code() -> None:
    assert json.loads(SCHEMA.read_text()) == event_json_schema()
    out = subprocess.run(
        [sys.executable, "-m", "runledger.cli", "schema", "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_spec_lists_every_event_of_the_product_spec() -> None:
    spec = (
        "phase_entered, artifact_written, validation_failed, phase_advanced, publish_done, "
        "run_started, run_finished, run_failed, cap_hit, user_override, impersonation_started, "
        "impersonation_ended"
    )
    assert set(SPEC_EVENT_TYPES) == set(spec.split(", "))
    assert set(SPEC_EVENT_TYPES) < set(EVENT_TYPES)


def test_docs_describe_every_type_and_field() -> None:
    doc = DOC.read_text()
    headings = set(re.findall(r"^### `([a-z_]+)`", doc, flags=re.M))
    assert headings == set(EVENT_TYPES)
    for model in EVENT_MODELS.values():
        for name, info in model.model_fields.items():
            mentioned = f"`{name}`" in doc or f"`payload.{name}`" in doc
            assert mentioned, f"docs/events.md does not mention field {name}"
            payload_model = info.annotation if name == "payload" else None
            if isinstance(payload_model, type) and issubclass(payload_model, BaseModel):
                for key in payload_model.model_fields:
                    assert f"`payload.{key}`" in doc, (
                        f"{model.__name__}: payload.{key} undocumented"
                    )


def test_pii_is_refused_however_often_the_other_keys_were_seen() -> None:
    # The payload check answers flat payloads of already-seen keys by a set comparison: a
    # personal-data key among familiar ones, nested, or behind a brace inside a string must
    # still be refused, in the fast path (whole body) and one event at a time alike.
    familiar = {"reason": "missing call to action", "rule": "cta-present"}
    for _ in range(3):
        assert parse_batch_json(orjson.dumps({"events": [_spec_event(familiar)]})) is not None
    sneaky = [
        ({**familiar, "Phone": "555 0100"}, "payload.Phone is personal data"),
        ({**familiar, "rule": {"e-mail": "x"}}, "payload.rule.e-mail is personal data"),
        ({**familiar, "reason": "a {b}", "zip": "1000"}, "payload.zip is personal data"),
        ({**familiar, "reason": "ping bob@example.com"}, "email address"),
    ]
    for payload, message in sneaky:
        body = orjson.dumps({"events": [_spec_event(familiar), _spec_event(payload)]})
        assert parse_batch_json(body) is None, payload
        slots = validate_batch(orjson.loads(body)["events"])
        assert not isinstance(slots[0], list)
        assert isinstance(slots[1], list)
        assert [e.field for e in slots[1]] == ["payload"], slots[1]
        assert message in slots[1][0].message, slots[1]


def _spec_event(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": "validation_failed", "tenant_id": "acme",
        "project_id": "proj-1", "run_id": "run-1", "phase": "review", "role": "validator",
        "occurred_at": datetime.now(UTC).isoformat(), "payload": payload,
    }  # fmt: skip


# A flat payload of numbers under keys seen before skips the payload checks (events.py,
# _plain_payload). It must answer exactly what the full checks answer, whatever the keys
# (personal data, secrets, coordinates, e-mail addresses, NUL, long) and the numbers.
_KEYS = st.one_of(
    st.sampled_from(["bytes", "words", "email", "phone", "api_key", "lat", "lng", "city",
                     "a@b.example", "x\x00y", "password", "k" * 65]),
    st.text(min_size=1, max_size=12),
)  # fmt: skip
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)


def _outcome(payload: dict[str, Any]) -> tuple[Any, ...]:
    """What ingest would answer for an event with ``payload``: its stored payload, or errors."""
    ev = {"event_id": str(uuid.uuid4()), "type": "artifact_written", "tenant_id": "acme",
          "project_id": "p", "run_id": "r", "phase": "build", "role": "implementer",
          "occurred_at": datetime.now(UTC).isoformat(), "artifact_path": "a.html",
          "artifact_version": 1, "payload": payload}  # fmt: skip
    parsed = parse_batch_json(json.dumps({"events": [ev]}).encode())  # any size of integer
    if parsed is None:
        return ("refused", validate_batch([ev])[0])
    return ("accepted", parsed.events[0].payload, parsed.as_sent)


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(_KEYS, _NUMBERS, max_size=18))
def test_a_flat_payload_of_numbers_is_judged_the_same_the_second_time(
    payload: dict[str, Any],
) -> None:
    events_module._FLAT_KEYS.clear()
    first = _outcome(payload)  # the full checks; the keys are remembered when it passes
    assert _outcome(payload) == first  # the shortcut, when it applies
    events_module._FLAT_KEYS.clear()
    assert _outcome(payload) == first


def test_the_shortcut_is_taken_for_keys_seen_before(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = events_module._check_payload
    monkeypatch.setattr(events_module, "_check_payload", lambda v: calls.append(v) or real(v))
    events_module._FLAT_KEYS.clear()
    first = _outcome({"bytes": 51234, "words": 400})
    assert _outcome({"bytes": 7, "words": 2.5}) == ("accepted", {"bytes": 7, "words": 2.5}, True)
    assert first[0] == "accepted" and len(calls) == 1
    # Anything else takes the full checks: a text value, a new key, a number past 64 bits.
    for other in ({"bytes": "51234"}, {"bytes": 1, "email": 2}, {"bytes": 2**64}):
        before = len(calls)
        _outcome(other)
        assert len(calls) > before, other


@pytest.mark.parametrize(
    ("body", "finer"),
    [
        (b'{"occurred_at":"2026-12-02T10:00:00.1234567Z"}', True),
        (b'{"occurred_at":"2026-12-02T10:00:00.123456789123+01:00"}', True),
        (b'{"occurred_at":"2026-12-02T10:00:00.1234567-05:00"}', True),
        (b'{"occurred_at":"2026-12-02t10:00:00.1234567z"}', True),
        (b'{"payload":{"due_at":"2026-12-02T10:00:00.12345678+00:00"}}', True),
        (b'{"occurred_at":"2026-12-02T10:00:00.123456Z"}', False),
        (b'{"cost_usd":"0.001234567","payload":{"x":1.23456789,"y":[2.000000001]}}', False),
    ],
)
def test_times_finer_than_the_microsecond_are_found_and_nothing_else(
    body: bytes, finer: bool
) -> None:
    # Such a body is never handed to PostgreSQL as sent (it would round what Python
    # truncated); a false alarm only costs serialising the validated events again.
    assert has_submicrosecond_times(body) is finer
