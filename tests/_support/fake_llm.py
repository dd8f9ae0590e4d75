"""An OpenAI- and Anthropic-compatible HTTP server on loopback with fixed usage."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ANTHROPIC_USAGE", "OPENAI_USAGE", "FakeLLM"]

OPENAI_USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
ANTHROPIC_USAGE = {
    "input_tokens": 500,
    "output_tokens": 100,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 300,
}


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18" if body.get("model") == "gpt-4o-mini" else body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "done"},
                     "finish_reason": "stop"}],
        "usage": OPENAI_USAGE,
    }  # fmt: skip


def _message(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant",
        "model": f"{body['model']}-20250514" if body.get("model") == "claude-sonnet-4"
        else body["model"],
        "content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": ANTHROPIC_USAGE,
    }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.endswith("/chat/completions"):
            out = _chat(body)
        elif self.path.endswith("/messages"):
            out = _message(body)
        else:
            self.send_error(404)
            return
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeLLM:
    """Serve chat completions and messages on 127.0.0.1 (a free port) until ``close``."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
