"""Every route of the URL map x every role, no token, a revoked token, another tenant's owner.

The rule for a route is the roles its view declares (``require`` for the API, ``page`` for
the console, ``public`` for probes and login): a route added without one fails here.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from _support.console import bearer, login, login_csrf, seed_run
from runledger.control import create_app
from runledger.control._auth import ROLES_ATTR
from runledger.control.alerts import ALERTMANAGER_ROLE
from runledger.store.tokens import create_token, revoke_token

ROLES = ("admin", "support", "finance", "owner", "agent")
TENANT_BOUND = {"tenant_id", "project_id", "run_id"}
SAMPLE = {"tenant_id": "acme", "project_id": "p1", "run_id": "r1", "name": "tenant"}
BUILTIN_PUBLIC = {"static"}  # Flask's own static-file route serves the console's CSS


@pytest.fixture
def world(db: Any, db_url: str, make_tenant: Any, make_token: Any) -> dict[str, Any]:
    make_tenant("acme")
    make_tenant("other")
    app = create_app(
        {
            "DATABASE": db,
            "TESTING": True,
            "AUTH_CACHE_SECONDS": 0,
            "ALERT_WEBHOOK_TOKEN": "am-s3cret",
        }
    )
    tokens = {
        role: make_token(role, "acme" if role in ("owner", "agent") else None) for role in ROLES
    }
    tokens["foreign_owner"] = make_token("owner", "other")
    with psycopg.connect(db_url) as conn:
        revoked = create_token(conn, role="admin", label="revoked", tenant_id=None)
        revoke_token(conn, revoked)
    client = app.test_client()
    seed_run(client, tokens["agent"], tenant="acme", project="p1", run="r1", fail="broken")
    return {"app": app, "tokens": tokens, "revoked": revoked, "db_url": db_url}


def _url(rule: Any) -> str:
    def sub(match: re.Match[str]) -> str:
        conv, name = match.group(1), match.group(2)
        return "1" if conv == "int" else SAMPLE.get(name, "x")

    return re.sub(r"<(?:(\w+):)?(\w+)>", sub, rule.rule)


def _routes(app: Any) -> list[tuple[Any, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in BUILTIN_PUBLIC:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule, method))
    # Logging out ends the session the later checks use: last.
    return sorted(out, key=lambda item: item[0].endpoint == "console.logout")


def _call(client: Any, method: str, url: str, *, token: str | None = None, csrf: str | None = None,
          page: bool = False) -> Any:  # fmt: skip
    headers = bearer(token) if token else {}
    if page:
        data = {"csrf_token": csrf} if csrf else {}
        return client.open(url, method=method, data=data if method != "GET" else None)
    return client.open(url, method=method, headers=headers,
                       json={} if method in ("POST", "PUT", "PATCH") else None)  # fmt: skip


def test_every_route_declares_who_may_call_it(world: dict[str, Any]) -> None:
    app = world["app"]
    missing = [
        f"{method} {rule.rule} ({rule.endpoint})"
        for rule, method in _routes(app)
        if getattr(app.view_functions[rule.endpoint], ROLES_ATTR, None) is None
    ]
    assert not missing, "routes without an authorisation rule: " + ", ".join(missing)


def test_api_routes_by_role(world: dict[str, Any]) -> None:
    app, tokens = world["app"], world["tokens"]
    client = app.test_client()
    failures = []
    for rule, method in _routes(app):
        if rule.endpoint.startswith("console."):
            continue
        roles = getattr(app.view_functions[rule.endpoint], ROLES_ATTR)
        url = _url(rule)
        if not roles:
            code = _call(client, method, url).status_code
            if code >= 500 or (code in (401, 403) and rule.endpoint != "console.embed"):
                failures.append(f"public {method} {url}: {code}")
            continue
        if roles == (ALERTMANAGER_ROLE,):
            # Only Alertmanager's shared secret opens it: no user token, whatever its role.
            for who, token in [("nobody", None), ("revoked", world["revoked"]), *tokens.items()]:
                code = _call(client, method, url, token=token).status_code
                if code != 401:
                    failures.append(f"{who} {method} {url}: {code} (Alertmanager only)")
            if _call(client, method, url, token="am-s3cret").status_code in (401, 403):
                failures.append(f"the shared secret {method} {url}: refused")
            continue
        for who, token in [("nobody", None), ("revoked", world["revoked"])]:
            resp = _call(client, method, url, token=token)
            if resp.status_code != 401 or "error" not in resp.get_json():
                failures.append(f"{who} {method} {url}: {resp.status_code}")
        # No Prometheus is configured here: the proxy answers 503 once authorised.
        unavailable = 503 if rule.endpoint.startswith("promproxy.") else 500
        for role in ROLES:
            code = _call(client, method, url, token=tokens[role]).status_code
            allowed = role in roles
            if ((allowed and code in (401, 403)) or (not allowed and code != 403)
                    or (code >= 500 and code != unavailable)):  # fmt: skip
                failures.append(f"{role} {method} {url}: {code} (allowed: {allowed})")
        if "owner" in roles and TENANT_BOUND & set(rule.arguments):
            code = _call(client, method, url, token=tokens["foreign_owner"]).status_code
            if code not in (403, 404):
                failures.append(f"other tenant's owner {method} {url}: {code}")
    assert not failures, "\n".join(failures)


def test_console_pages_by_role(world: dict[str, Any]) -> None:
    app, tokens = world["app"], world["tokens"]
    sessions = {}
    for who in (*ROLES, "foreign_owner"):
        client = app.test_client()
        sessions[who] = (
            client,
            login(client, tokens[who]) if who != "agent" else _agent_csrf(client, tokens[who]),
        )
    anonymous = app.test_client()
    failures = []
    for rule, method in _routes(app):
        if not rule.endpoint.startswith("console."):
            continue
        roles = getattr(app.view_functions[rule.endpoint], ROLES_ATTR)
        url = _url(rule)
        if not roles:
            continue  # login and the signed embed link: tested on their own
        resp = _call(anonymous, method, url, page=True)
        expected = 302 if method == "GET" else 401
        if resp.status_code != expected:
            failures.append(f"anonymous {method} {url}: {resp.status_code}")
        for role in ROLES:
            client, csrf = sessions[role]
            code = _call(client, method, url, csrf=csrf, page=True).status_code
            allowed = role in roles
            if (allowed and code in (401, 403)) or (not allowed and code != 403) or code >= 500:
                failures.append(f"{role} {method} {url}: {code} (allowed: {allowed})")
        if "owner" in roles and TENANT_BOUND & set(rule.arguments):
            client, csrf = sessions["foreign_owner"]
            code = _call(client, method, url, csrf=csrf, page=True).status_code
            if code not in (403, 404):
                failures.append(f"other tenant's owner {method} {url}: {code}")
    assert not failures, "\n".join(failures)


def _agent_csrf(client: Any, token: str) -> str:
    """Agents may log in but see no page; their CSRF token is not needed to be refused."""
    resp = client.post("/login", data={"token": token, "csrf_token": login_csrf(client)})
    assert resp.status_code == 303
    return "not-needed"


def test_revoking_the_token_ends_its_console_session(world: dict[str, Any]) -> None:
    client = world["app"].test_client()
    with psycopg.connect(world["db_url"]) as conn:
        token = create_token(conn, role="admin", label="short-lived", tenant_id=None)
    login(client, token)
    assert client.get("/admin").status_code == 200
    with psycopg.connect(world["db_url"]) as conn:
        assert revoke_token(conn, token)
    resp = client.get("/admin")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
