"""An agent process in an environment holding only the SDK's dependencies and the providers.

Run by tests/test_lowest_versions.py inside a throwaway virtualenv: prints one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from anthropic.types import Message
from google.genai import types as genai
from openai.types.chat import ChatCompletion

from runledger.sdk import Ledger
from runledger.sdk._config import DeliveryOptions


def main() -> None:
    dead = sys.argv[1]  # a loopback URL nothing listens on
    spool = Path(tempfile.mkdtemp()) / "events.db"
    environ = {"RUNLEDGER_ENFORCE_CAPS": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": dead}
    ledger = Ledger(dead, "rl_test", environ=environ, delivery=DeliveryOptions(spool_path=spool))
    responses = [
        ("gpt-4o-mini", ChatCompletion.model_validate({
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20,
                                     "total_tokens": 120}})),
        ("claude-sonnet-4", Message.model_validate({
            "id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90}})),
        ("gemini-2.5-flash", genai.GenerateContentResponse.model_validate({
            "usage_metadata": {"prompt_token_count": 50, "candidates_token_count": 7}})),
    ]  # fmt: skip
    tokens = {}
    with ledger.run("acme", "p", phase="build", role="implementer") as run:
        for model, response in responses:
            with run.model_call(model=model) as call:
                call.record(response=response)
            tokens[model] = [call.tokens_in, call.tokens_out]
    started = time.monotonic()
    delivered = ledger.flush(timeout=1.0)  # nothing listens: tenacity's backoff runs
    ledger.close(timeout=1.0)
    print(json.dumps({
        "tokens": tokens, "delivered": delivered, "close_s": time.monotonic() - started,
        "versions": {p: version(p) for p in ("tenacity", "pydantic", "opentelemetry-sdk",
                                              "google-genai", "openai", "anthropic")},
        "server_modules": [m for m in ("flask", "psycopg", "gunicorn", "prometheus_client")
                           if importlib.util.find_spec(m) is not None],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
