"""The OpenAPI document: every API route is in it, the checked-in copy is current, and
schemathesis fuzzes every operation from it (no 5xx; every 4xx a JSON error naming it)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from _support.console import seed_run
from runledger.control import create_app
from runledger.control.openapi import (
    NoDatabase,
    checked_in_path,
    document_text,
    is_api_endpoint,
)


def test_every_api_route_is_in_the_checked_in_document(client: Any, app: Any) -> None:
    doc = json.loads(checked_in_path().read_text())
    assert client.get("/openapi.json").get_json() == doc
    missing = []
    for rule in app.url_map.iter_rules():
        if not is_api_endpoint(rule.endpoint):
            continue
        path = rule.rule.replace("<int:", "<").replace("<", "{").replace(">", "}")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if method.lower() not in doc["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, (
        f"routes missing from the OpenAPI document: {missing}; run `runledger openapi`"
    )
    # A JSON API that takes a body documents it (control/openapi.py BODIES): schemathesis
    # below can only fuzz what the document describes.
    bodiless = [
        f"{method.upper()} {path}"
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in ("post", "put", "patch") and "requestBody" not in op
        and not path.startswith("/prom/")  # Prometheus' API takes form parameters
    ]  # fmt: skip
    assert not bodiless, f"no request body documented for {bodiless}"
    assert doc["paths"]["/v1/tenants/{tenant_id}/pause"]["post"]["x-roles"] == ["admin"]


def test_checked_in_document_is_current() -> None:
    current = document_text(create_app({"DATABASE": NoDatabase()}))
    assert checked_in_path().read_text() == current, (
        "control/openapi.json is stale: run `runledger openapi`"
    )


class _FakePrometheus(http.server.BaseHTTPRequestHandler):
    """Answers like Prometheus' API so the proxy's forwarding is fuzzed too."""

    def _answer(self) -> None:
        body = json.dumps({"status": "success", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def fake_prometheus() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def fuzzed_app(
    db: Any, make_tenant: Any, make_token: Any, fake_prometheus: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:  # fmt: skip
    monkeypatch.setenv("RUNLEDGER_PROMETHEUS_URL", fake_prometheus)
    make_tenant("acme")
    app = create_app({"DATABASE": db, "TESTING": True, "ALERT_WEBHOOK_TOKEN": "am-s3cret"})
    app.config["FUZZ_TOKEN"] = make_token("admin")
    seed_run(app.test_client(), make_token("agent", "acme"), tenant="acme", project="p1", run="r1")
    return app


def test_fuzz_every_operation(fuzzed_app: Any) -> None:
    """Every operation, positive and negative cases, as an admin (who may call most)."""
    api = schemathesis.openapi.from_wsgi("/openapi.json", fuzzed_app)
    admin = {"Authorization": f"Bearer {fuzzed_app.config['FUZZ_TOKEN']}"}
    # Alertmanager's webhook takes the shared secret, never a user token.
    alertmanager = {"Authorization": "Bearer am-s3cret"}
    seen = []
    statuses: list[int] = []
    for result in api.get_all_operations():
        operation = result.ok()
        seen.append(operation.label)
        headers = alertmanager if operation.path == "/v1/alerts/webhook" else admin

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case: Any) -> None:
            resp = case.call(headers=headers)  # noqa: B023 (called before the loop moves on)
            statuses.append(resp.status_code)
            where = f"{case.method} {case.formatted_path}"
            assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:300]}"
            if 400 <= resp.status_code < 500:
                body = json.loads(resp.text)
                assert isinstance(body.get("error"), str) and body["error"], (where, body)

        fuzz()
    assert len(seen) >= 30, seen
    # The fuzzing reached the operations' logic: both accepted and refused requests.
    assert {200, 400, 404} <= set(statuses), sorted(set(statuses))
