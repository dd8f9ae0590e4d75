"""The event spec: the checked-in JSON Schema and docs match the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from runledger.events import EVENT_MODELS, EVENT_TYPES, SPEC_EVENT_TYPES, event_json_schema

ROOT = Path(__file__).resolve().parents[2]
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
