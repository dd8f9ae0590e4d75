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
from pydantic import BaseModel

from _support import ROOT
from runledger.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    SPEC_EVENT_TYPES,
    event_json_schema,
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
