"""The console in headless Chromium against the real control service (gunicorn).

Takes a screenshot of each page: into docs/img/ (the README's) with
RUNLEDGER_UPDATE_SCREENSHOTS=1, else into the test's temporary folder, so a test run leaves
the checkout unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from _support import ROOT, ControlService
from _support.browser import chromium
from _support.console import bearer, seed_run
from runledger.control import _embed, create_app
from runledger.cost import TenantPaused
from runledger.sdk import Ledger


@pytest.fixture
def img(tmp_path: Path) -> Path:
    """Where screenshots go: docs/img/ when asked to update them, else a temporary folder."""
    return (
        ROOT / "docs" / "img" if os.environ.get("RUNLEDGER_UPDATE_SCREENSHOTS") == "1" else tmp_path
    )


class _Api:
    """A requests client of the live service, for seeding through the ingest API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, path: str, json: Any, headers: dict[str, str]) -> Any:
        resp = requests.post(self.base + path, json=json, headers=headers, timeout=10)
        resp.get_json = resp.json  # type: ignore[attr-defined]
        return resp


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def world(control: ControlService, make_tenant: Callable[..., str],
          make_token: Callable[..., str], sql: Any) -> dict[str, Any]:  # fmt: skip
    make_tenant("acme", "20")
    make_tenant("other", "20")
    tokens = {
        "admin": make_token("admin"), "agent": make_token("agent", "acme"),
        "other_agent": make_token("agent", "other"), "owner": make_token("owner", "acme"),
    }  # fmt: skip
    api = _Api(control.url)
    for i, (model, cost) in enumerate([("gpt-4.1", "4.25"), ("claude-sonnet-4", "9.5"),
                                       ("gpt-4.1", "3.1")]):  # fmt: skip
        fail = "lint: missing alt text" if i == 2 else None
        seed_run(api, tokens["agent"], tenant="acme", project="site-42", run=f"run-{i}",
                 model=model, cost=cost, fail=fail)  # fmt: skip
    seed_run(api, tokens["other_agent"], tenant="other", project="other-site", run="run-o",
             cost="1.75")  # fmt: skip
    sql("INSERT INTO notifications (tenant_id, audience, severity, title, body, source) VALUES"
        " ('acme', 'owner', 'warning', 'Daily cap at 84%', 'acme has spent $16.85 of $20.00',"
        "  'alertmanager'),"
        " ('other', 'owner', 'critical', 'Other tenant blocked', 'not for acme', 'alertmanager'),"
        " (NULL, 'admin', 'warning', 'Exporter scrape slow', 'p95 above 1s',"
        "  'alertmanager')")  # fmt: skip
    return {"url": control.url, "tokens": tokens}


def _login(page: Any, base: str, token: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_admin_raises_a_cap_and_pauses_a_tenant(
    browser: Any, world: dict[str, Any], make_ledger: Callable[..., Ledger], sql: Any, img: Path
) -> None:
    base = world["url"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(base + "/login")
    page.screenshot(path=str(img / "console-login.png"))
    _login(page, base, world["tokens"]["admin"])
    assert page.url == base + "/admin"
    assert "Exporter scrape slow" in page.inner_text("#banners")
    assert "Daily cap at 84%" not in page.inner_text("#banners")
    assert page.inner_text("#spend-total") == "$18.60"  # acme $16.85 and other $1.75
    assert "acme" in page.inner_text("#caps-near")  # $16.85 of $20 is past 80%
    page.screenshot(path=str(img / "console-admin.png"), full_page=True)

    page.click("#spend-by-tenant >> text=acme")
    page.fill("#raise-cap-form input[name=new_cap_usd]", "50")
    page.fill("#raise-cap-form input[name=reason]", "launch week traffic")
    page.click("#raise-cap-form button")
    page.wait_for_load_state()
    assert "Done: cap raised" in page.inner_text("main")
    assert page.inner_text("#cap-in-force") == "$50.00"
    changes = page.inner_text("#cap-changes")
    assert "$20.00" in changes and "$50.00" in changes and "launch week traffic" in changes
    audit = page.inner_text("#audit")
    assert "cap_change" in audit and "launch week traffic" in audit and "test-admin" in audit

    page.fill("#pause-form input[name=reason]", "card declined")
    page.click("#pause-form button")
    page.wait_for_load_state()
    assert page.inner_text("#tenant-status") == "paused"
    assert "tenant_paused" in page.inner_text("#audit")
    page.screenshot(path=str(img / "console-tenant.png"), full_page=True)

    ledger = make_ledger(base, world["tokens"]["agent"])
    with pytest.raises(TenantPaused, match="paused by an admin: no new runs"):
        ledger.start_run("acme", "site-42", "build", "implementer")

    page.goto(base + "/projects/site-42")
    reasons = page.locator("[data-reason]").evaluate_all("els => els.map(e => e.dataset.reason)")
    assert "tenant_paused" in reasons and "card declined" in page.inner_text("#why-blocked ~ div")
    page.screenshot(path=str(img / "console-project.png"), full_page=True)
    page.goto(base + "/runs/run-2")
    assert "lint: missing alt text" in page.inner_text("#errors")
    page.screenshot(path=str(img / "console-run.png"), full_page=True)
    page.goto(base + "/export")
    page.screenshot(path=str(img / "console-export.png"))

    # A form post without the CSRF token is refused, with the session cookie sent.
    refused = ctx.request.post(base + "/tenants/acme/resume", form={"reason": "no csrf"})
    assert refused.status == 400 and "CSRF token is missing or wrong" in refused.text()
    assert sql("SELECT status FROM tenants WHERE tenant_id = 'acme'") == [("paused",)]
    ctx.close()


def test_owner_sees_only_their_tenant_and_embed_links_are_tamper_proof(
    browser: Any, world: dict[str, Any], db: Any, img: Path
) -> None:
    base = world["url"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    _login(page, base, world["tokens"]["owner"])
    assert page.url == base + "/tenants/acme"
    banners = page.inner_text("#banners")
    assert "Daily cap at 84%" in banners
    assert "Other tenant blocked" not in banners and "Exporter scrape slow" not in banners
    assert "run-o" not in page.inner_text("main") and "100 / 40" not in page.inner_text("main")
    page.screenshot(path=str(img / "console-owner.png"), full_page=True)
    assert page.goto(base + "/tenants/other").status == 404
    assert page.goto(base + "/runs/run-o").status == 404
    assert page.goto(base + "/admin").status == 403

    page.goto(base + "/tenants/acme")
    page.click("text=Create embed link")
    url = page.inner_text("#embed-url")
    assert url.startswith(base + "/embed/")
    anonymous = browser.new_context()
    embed = anonymous.new_page()
    assert embed.goto(url).status == 200
    assert "acme" in embed.inner_text("h1") and "Daily cap at 84%" in embed.inner_text("#banners")
    assert embed.locator("form").count() == 0
    embed.screenshot(path=str(img / "console-embed.png"), full_page=True)

    signed = url.removeprefix(base + "/embed/")
    tampered = signed.replace(signed[5], "A" if signed[5] != "A" else "B", 1)
    resp = embed.goto(f"{base}/embed/{tampered}")
    assert resp.status == 403 and "not valid" in embed.inner_text("#error-message")
    app = create_app({"DATABASE": db})
    with app.app_context():  # the key is the service's, kept in the ledger
        expired, _ = _embed.mint("acme", 60, now=datetime.now(UTC).timestamp() - 7200)
    resp = embed.goto(f"{base}/embed/{expired}")
    assert resp.status == 403 and "expired" in embed.inner_text("#error-message")
    anonymous.close()
    ctx.close()
    assert requests.get(base + "/v1/export/runs.csv", headers=bearer(world["tokens"]["owner"]),
                        timeout=10).text.count("other-site") == 0  # fmt: skip
