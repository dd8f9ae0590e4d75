"""Property-based tests of the alerts API: no answer is a 5xx, whatever the body, and every
4xx is the one JSON error shape naming its fields (as tests/control/test_properties.py does
for the other endpoints)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runledger.control import create_app
from runledger.store import Database

SECRET = "property-secret"
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

_odd = st.sampled_from(["\x00", "\ud800", "\u2028", "é", "x" * 3000, "", " ", "1e999"])
texts = st.one_of(st.text(max_size=10), _odd)
wrong = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                  st.floats(allow_nan=True), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))  # fmt: skip
anything = st.one_of(texts, wrong)
times = st.one_of(
    st.sampled_from(["2026-01-05T10:00:00Z", "2026-01-05T10:00:00+14:30", "0001-01-01T00:00:00Z",
                     "9999-12-31T23:59:59-01:00", "yesterday", "2026-02-30T00:00:00Z", ""]),
    st.integers(-(10**12), 10**12),
)  # fmt: skip


def field(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = anything) -> Any:
    """A plausible value four times in five, else an adversarial one."""
    return st.one_of(valid, valid, valid, valid, bad)


labels = st.fixed_dictionaries(
    {"alertname": field(st.sampled_from(["PhaseStalled", "LedgerDown"]), texts),
     "audience": field(st.sampled_from(["owner", "admin", "nobody"]), texts),
     "tenant": field(st.sampled_from(["acme", "ghost"]), texts)},
    optional={"severity": field(st.sampled_from(["critical", "page"]), texts), "x": texts},
)  # fmt: skip
alerts = st.fixed_dictionaries(
    {"status": field(st.sampled_from(["firing", "resolved"]), texts),
     "labels": field(labels, wrong),
     "startsAt": times, "fingerprint": field(st.sampled_from(["ab12", "ffff"]), texts)},
    optional={"annotations": field(st.dictionaries(st.sampled_from(["summary", "description"]),
                                                   texts, max_size=2), wrong),
              "endsAt": anything},
)  # fmt: skip
webhooks = st.fixed_dictionaries(
    {"version": field(st.just("4"), anything), "status": field(st.just("firing"), texts),
     "receiver": field(st.just("owner"), texts),
     "alerts": field(st.lists(alerts, max_size=3), wrong)},
    optional={"groupKey": anything, "truncatedAlerts": anything},
)  # fmt: skip
silences = st.fixed_dictionaries(
    {"tenant": field(st.sampled_from(["acme", "ghost"]), texts),
     "reason": field(st.just("maintenance"), texts)},
    optional={"alertname": field(st.just("PhaseStalled"), texts),
              "duration_minutes": field(st.integers(-5, 10**6), anything),
              "ends_at": times, "bogus": anything},
)  # fmt: skip
outcomes = st.fixed_dictionaries(
    {"fingerprint": field(st.sampled_from(["ab12", "0"]), texts),
     "alertname": field(st.just("PhaseStalled"), texts), "started_at": times,
     "outcome": field(st.sampled_from(["true_positive", "false_positive", "maybe"]), texts)},
    optional={"note": anything},
)  # fmt: skip
settings_bodies = st.fixed_dictionaries(
    {},
    optional={"owner_emails": field(st.lists(st.sampled_from(["o@acme.example", "nope", "a@b"]),
                                             max_size=25), wrong),
              "slack_webhook_url": field(st.sampled_from(["https://hooks.example/x", "ftp://x",
                                                          "not a url"]), texts),
              "slack_opt_in": field(st.booleans(), anything)},
)  # fmt: skip


def check_answer(resp: Any) -> Any:
    """Assert the answer is below 500 and a 4xx is the JSON error shape; return its JSON."""
    text = resp.get_data(as_text=True)
    assert resp.status_code < 500, f"{resp.status_code}: {text[:500]}"
    assert resp.mimetype == "application/json", text[:200]
    body = resp.get_json()
    if resp.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        for problem in body.get("fields", []):
            assert set(problem) == {"field", "message"} and problem["field"], problem
    return body


def _send(client: Any, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    return client.open(path, method=method, data=json.dumps(body, allow_nan=True),
                       headers=headers, content_type="application/json")  # fmt: skip


@pytest.fixture
def api(db: Database) -> Iterator[Any]:
    # No Alertmanager: a valid mute answers 503 (what to configure), never a 5xx crash.
    app = create_app({"DATABASE": db, "TESTING": True, "ALERT_WEBHOOK_TOKEN": SECRET})
    yield app.test_client()


@pytest.fixture
def admin(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme")
    return {"Authorization": f"Bearer {make_token('admin')}"}


_FAR = {
    "status": "firing",
    "startsAt": "9999-12-31T23:59:59-01:00",
    "fingerprint": "ab12",
    "labels": {"alertname": "LedgerDown", "audience": "admin"},
}


@SETTINGS
@given(body=field(webhooks, wrong))
@example(body={"version": "4", "status": "firing", "receiver": "admin", "alerts": [_FAR]})
def test_webhook(api: Any, admin: dict[str, str], body: Any) -> None:
    check_answer(_send(api, "POST", "/v1/alerts/webhook", {"Authorization": f"Bearer {SECRET}"},
                       body))  # fmt: skip


@SETTINGS
@given(body=field(silences, wrong))
def test_silences(api: Any, admin: dict[str, str], body: Any) -> None:
    resp = _send(api, "POST", "/v1/alerts/silences", admin, body)
    check_answer(resp)
    assert resp.status_code != 201  # nothing can be muted without Alertmanager


@SETTINGS
@given(body=field(outcomes, wrong))
def test_outcomes(api: Any, admin: dict[str, str], body: Any) -> None:
    check_answer(_send(api, "POST", "/v1/alerts/outcomes", admin, body))


@SETTINGS
@given(body=field(settings_bodies, wrong), tenant=field(st.just("acme"), texts))
def test_notification_settings(api: Any, admin: dict[str, str], body: Any, tenant: Any) -> None:
    from urllib.parse import quote

    segment = quote(str(tenant), safe="", errors="surrogatepass") or "x"
    answer = check_answer(_send(api, "PUT", f"/v1/tenants/{segment}/notifications", admin, body))
    if "owner_emails" in answer:
        got = check_answer(api.get(f"/v1/tenants/{segment}/notifications", headers=admin))
        assert got["owner_emails"] == answer["owner_emails"]
