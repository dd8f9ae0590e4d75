"""Property-based tests: no JSON endpoint of the control service answers 5xx, whatever it is sent.

Hypothesis generates structurally plausible but adversarial bodies and URL segments (NUL and
other control characters, lone surrogates, huge, tiny and negative numbers, exponent
notation, NaN, deep nesting, wrong types, odd timestamps and UTC offsets) for every JSON
endpoint, and sends them to the real app on a real database. Every answer must be below 500;
every 4xx is JSON ``{"error": sentence, "fields": [{"field", "message"}]}``; accepted data is
read back from the database and must be stored whole. Schema-driven fuzzing of the same
endpoints (schemathesis) comes once the service has an OpenAPI document (planned).

Each test shares one database across its examples (examples only add rows), so the
function-scoped fixture health check is switched off; ``max_examples`` keeps the whole file
to about a minute on two cores.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runledger.events import EVENT_TYPES

SQL = Callable[..., list[tuple[Any, ...]]]
SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# -- adversarial values -------------------------------------------------------------------------

_odd_chars = st.sampled_from(["\x00", "\u2028", "\ud800", "\udfff", "\U0001f600", "é", "\n", " "])
texts = st.one_of(
    st.text(max_size=12),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=5), _odd_chars, st.text(max_size=5)),
    st.just("x" * 600),
)
"""Strings with NUL, lone surrogates, line separators, non-ASCII, or too long."""

numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e30", "1e11", "1e12", "99999999999.999999999", "100000000000", "-0",
                     "1e-10", "0.000000001", "NaN", "Infinity", "-1", "1E+2", "0x10", ""]),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-99, 99), st.integers(-400, 400)),
)  # fmt: skip
"""Dollar amounts and counts: huge, tiny, negative, exponent notation, not finite, not numbers."""


def _timestamp(day: str, frac: str, sign: str, hours: int, minutes: int) -> str:
    return f"{day}T10:00:00{frac}{sign}{hours:02d}:{minutes:02d}"


_TODAY = datetime.now(UTC).date()
timestamps = st.one_of(
    st.builds(
        _timestamp,
        st.sampled_from([str(_TODAY), str(_TODAY - timedelta(days=1)), "0001-01-01",
                         "9999-12-31"]),
        st.sampled_from(["", ".5", ".123456", ".1234567", ".123456789123"]),
        st.sampled_from(["+", "-"]),
        st.integers(0, 25),
        st.sampled_from([0, 30, 59, 60]),
    ),
    st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "now",
                     "2026-02-30T00:00:00Z", f"{_TODAY}T10:00:00", "1764669600", ""]),
    st.integers(-(10**12), 10**12),
)  # fmt: skip
"""Times: every year edge, sub-microsecond fractions, offsets PostgreSQL refuses, garbage."""


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(_nested, st.sampled_from([2, 40, 300])),
)
anything = st.one_of(texts, numbers, timestamps, wrong_types)


def field(valid: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value six times in seven, else an adversarial one of the field's kind.

    Mostly plausible, so that most bodies have at most one bad field and get past validation
    of the others, down to the database.
    """
    return st.one_of(*[valid] * 6, st.one_of(*(bad or (anything,))))


def _recent(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


usd = field(
    st.sampled_from(["0.5", "1", "0.000000001", 2, "99999999999", "99999999999.999999999"]),
    numbers,
)
times = field(st.integers(0, 600).map(_recent), timestamps)
idents = field(st.sampled_from(["acme", "proj-1", "run-1", "run-2"]), texts)


# -- checking answers ---------------------------------------------------------------------------


def _send(client: Any, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    data = None if body is None else json.dumps(body, allow_nan=True)
    return client.open(path, method=method, data=data, headers=headers,
                       content_type="application/json")  # fmt: skip


def _segment(text: str) -> str:
    """Return ``text`` percent-encoded as one URL path segment (NUL as %00)."""
    return quote(text, safe="", errors="surrogatepass") or "x"


def check_answer(resp: Any) -> Any:
    """Assert the answer is below 500 and a 4xx is the one JSON error shape; return its JSON."""
    text = resp.get_data(as_text=True)
    assert resp.status_code < 500, f"{resp.status_code}: {text[:500]}"
    if resp.status_code in (308, 301) and resp.location:
        return {}  # routing merges "//" (a "/" sent as %2F) and redirects: no body to check
    assert resp.mimetype == "application/json", text[:200]
    body = resp.get_json()
    if resp.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        for problem in body.get("fields", []):
            assert set(problem) == {"field", "message"}, problem
            assert problem["field"] and problem["message"], problem
    return body


def check_results(body: Any) -> None:
    """Assert every rejected item of a batch names its fields."""
    for result in body["results"]:
        if result["status"] == "rejected":
            assert result["errors"], result
            for problem in result["errors"]:
                assert problem["field"] and problem["message"], problem


def _usd(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise AssertionError(f"accepted {value!r} as dollars") from None


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme", "100")
    return {"Authorization": f"Bearer {make_token('admin')}"}


@pytest.fixture
def lease_id(client: Any, admin: dict[str, str]) -> str:
    resp = _send(client, "POST", "/v1/caps/leases", admin,
                 {"tenant_id": "acme", "holder": "run-1", "min_usd": "1"})  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["lease_id"])


# -- events -------------------------------------------------------------------------------------

payloads = st.fixed_dictionaries(
    {},
    optional={
        "reason": texts, "summary": texts, "service": texts, "action": texts, "actor": idents,
        "proof_id": idents, "due_at": times, "demo_id": idents, "microsite_id": idents,
        "cap": st.sampled_from(["cost", "time", "bogus"]), "limit": numbers, "spent": numbers,
        "status": st.sampled_from(["ok", "partial", "succeeded", "bad"]), "to_phase": texts,
        "lease_id": texts, "deep": wrong_types, "n": numbers,
    },
)  # fmt: skip

events = st.fixed_dictionaries(
    {
        "event_id": field(st.uuids().map(str), texts),
        "type": field(st.sampled_from(EVENT_TYPES), texts),
        "tenant_id": field(st.just("acme"), texts),
        "project_id": idents,
        "run_id": idents,
        "phase": field(st.sampled_from(["build", "Review"]), texts),
        "role": field(st.sampled_from(["implementer"]), texts),
        "occurred_at": times,
    },
    optional={
        "cost_usd": usd, "tokens_in": field(st.integers(0, 10**6), numbers),
        "tokens_out": numbers, "model": field(st.just("gpt-4o"), texts),
        "cached": field(st.booleans()), "artifact_path": field(st.just("a.md"), texts),
        "artifact_version": field(st.integers(1, 5), numbers),
        "attempt": field(st.integers(1, 3), numbers), "playbook": texts,
        "trace_id": field(st.just("ab" * 16), texts), "span_id": field(st.just("cd" * 8), texts),
        "payload": field(payloads, wrong_types), "extra_field": anything,
    },
)  # fmt: skip


@settings(SETTINGS, max_examples=300)
@given(batch=st.lists(events, min_size=1, max_size=4))
def test_events(client: Any, admin: dict[str, str], sql: SQL, batch: list[dict[str, Any]]) -> None:
    body = check_answer(_send(client, "POST", "/v1/events", admin, {"events": batch}))
    if "results" not in body:
        return
    check_results(body)
    for result in body["results"]:
        if result["status"] != "accepted":
            continue
        sent = batch[result["index"]]
        rows = sql("SELECT cost_usd, tenant_id, run_id FROM events WHERE event_id = %s",
                   uuid.UUID(result["event_id"]))  # fmt: skip
        assert rows == [(_usd(sent.get("cost_usd", 0)), sent["tenant_id"], sent["run_id"])]


# -- leases -------------------------------------------------------------------------------------

lease_bodies = st.fixed_dictionaries(
    {"tenant_id": field(st.just("acme"), texts), "holder": field(st.just("run-1"), texts),
     "min_usd": usd},
    optional={"role": field(st.just("implementer"), texts), "want_usd": usd,
              "ttl_s": field(st.integers(1, 600), numbers), "bogus": anything},
)  # fmt: skip


@SETTINGS
@given(body=field(lease_bodies, wrong_types))
def test_lease_open(client: Any, admin: dict[str, str], sql: SQL, body: Any) -> None:
    answer = check_answer(_send(client, "POST", "/v1/caps/leases", admin, body))
    if answer.get("status") == "granted":
        rows = sql("SELECT tenant_id, holder FROM cap_leases WHERE lease_id = %s",
                   answer["lease_id"])  # fmt: skip
        assert rows == [(body["tenant_id"], body["holder"])]


path_segments = field(st.sampled_from(["acme", "nobody"]), texts)
settle_bodies = st.fixed_dictionaries(
    {"spent_usd": usd},
    optional={"want_usd": usd, "min_usd": usd, "keep_usd": usd,
              "ttl_s": field(st.integers(1, 600), numbers)},
)  # fmt: skip


@SETTINGS
@given(action=st.sampled_from(["sync", "close"]), own=st.booleans(), segment=path_segments,
       body=field(settle_bodies, wrong_types))  # fmt: skip
def test_lease_sync_and_close(
    client: Any, admin: dict[str, str], lease_id: str, action: str, own: bool, segment: str,
    body: Any,
) -> None:  # fmt: skip
    target = lease_id if own else _segment(segment)
    if action == "close" and isinstance(body, dict):
        body = {k: v for k, v in body.items() if k == "spent_usd"}
    check_answer(_send(client, "POST", f"/v1/caps/leases/{target}/{action}", admin, body))


@SETTINGS
@given(body=st.one_of(st.just({}), wrong_types, st.dictionaries(texts, anything, max_size=2)))
def test_reclaim(client: Any, admin: dict[str, str], body: Any) -> None:
    check_answer(_send(client, "POST", "/v1/caps/reclaim", admin, body))


# -- caps and raises ----------------------------------------------------------------------------


@SETTINGS
@given(segment=path_segments, what=st.sampled_from(["", "/raises"]))
def test_cap_status_and_raises_list(
    client: Any, admin: dict[str, str], segment: str, what: str
) -> None:
    check_answer(_send(client, "GET", f"/v1/caps/{_segment(segment)}{what}", admin,
                       None))  # fmt: skip


raise_bodies = st.fixed_dictionaries(
    {"new_cap_usd": usd, "reason": field(st.just("launch week"), texts)},
    optional={"expires_at": field(st.integers(1, 48).map(
        lambda h: (datetime.now(UTC) + timedelta(hours=h)).isoformat()), timestamps)},
)  # fmt: skip
temporary_bodies = st.fixed_dictionaries(
    {"reason": field(st.just("launch week"), texts)}, optional={"new_cap_usd": usd}
)


@SETTINGS
@given(segment=path_segments, kind=st.sampled_from(["raises", "raises/temporary"]),
       data=st.data())  # fmt: skip
def test_raises(
    client: Any, admin: dict[str, str], sql: SQL, segment: str, kind: str, data: Any
) -> None:
    bodies = raise_bodies if kind == "raises" else temporary_bodies
    body = data.draw(field(bodies, wrong_types))
    path = f"/v1/caps/{_segment(segment)}/{kind}"
    answer = check_answer(_send(client, "POST", path, admin, body))
    if "raise_id" in answer:
        rows = sql("SELECT tenant_id, reason FROM cap_raises WHERE raise_id = %s",
                   answer["raise_id"])  # fmt: skip
        assert rows == [(segment, body["reason"].strip())]


@SETTINGS
@given(segment=path_segments, raise_id=st.integers(0, 2**70),
       body=field(st.fixed_dictionaries({"reason": texts}), wrong_types))  # fmt: skip
def test_revert(client: Any, admin: dict[str, str], segment: str, raise_id: int, body: Any) -> None:
    path = f"/v1/caps/{_segment(segment)}/raises/{raise_id}/revert"
    check_answer(_send(client, "POST", path, admin, body))


# -- prompt audit and health --------------------------------------------------------------------

records = st.fixed_dictionaries(
    {"audit_id": field(st.uuids().map(str), texts), "tenant_id": field(st.just("acme"), texts),
     "run_id": idents, "prompt": field(st.just("summarise the brief"), texts),
     "created_at": times},
    optional={"response": texts, "model": field(st.just("gpt-4o"), texts), "bogus": anything},
)  # fmt: skip


@SETTINGS
@given(batch=st.lists(field(records, wrong_types), min_size=1, max_size=3))
def test_prompt_audit(client: Any, admin: dict[str, str], sql: SQL, batch: list[Any]) -> None:
    body = check_answer(_send(client, "POST", "/v1/prompt-audit", admin, {"records": batch}))
    if "results" not in body:
        return
    check_results(body)
    for result in body["results"]:
        if result["status"] == "accepted":
            sent = batch[result["index"]]
            rows = sql("SELECT tenant_id FROM prompt_audit WHERE run_id = %s", sent["run_id"])
            assert ("acme",) in rows


@SETTINGS
@given(path=st.sampled_from(["/healthz", "/readyz"]), method=st.sampled_from(["GET", "POST"]),
       body=st.one_of(st.none(), anything))  # fmt: skip
def test_health(client: Any, path: str, method: str, body: Any) -> None:
    check_answer(_send(client, method, path, {}, body))
