"""The console's alert and quality forms (Flask test client) against real components:
PostgreSQL, and a real Alertmanager on loopback for the mutes.

Each form calls the function its API route calls, so these tests check what the page adds
(roles, CSRF, the tenant in the URL, the listing) and that the effect and the audit row are
the API's.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from _support.alerting import Alertmanager, am_alert, am_payload, start_alertmanager
from _support.console import bearer, login, seed_run
from runledger.control import create_app
from runledger.store import Database
from runledger.store.quality import freeze_publisher

pytestmark = pytest.mark.timeout(120)

SECRET = "console-webhook-secret"
HOOK = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    am = start_alertmanager(tmp_path_factory.mktemp("am"), secret=SECRET)
    yield am
    am.stop()


@pytest.fixture
def app(db: Database, alertmanager: Alertmanager) -> Any:
    return create_app(
        {
            "DATABASE": db,
            "TESTING": True,
            "ALERT_WEBHOOK_TOKEN": SECRET,
            "ALERTMANAGER_URL": alertmanager.url,
        }
    )


@pytest.fixture
def tokens(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme")
    make_tenant("other")
    return {
        "admin": make_token("admin"),
        "support": make_token("support"),
        "owner": make_token("owner", "acme"),
        "other_owner": make_token("owner", "other"),
    }


def _session(app: Any, token: str) -> tuple[Any, str]:
    client = app.test_client()
    return client, login(client, token)


def _text(resp: Any) -> str:
    return htmllib.unescape(resp.get_data(as_text=True))


def _section(page: str, start_id: str, end: str = "</table>") -> str:
    start = page.index(f'id="{start_id}"')
    return page[start : page.index(end, start)]


def test_admin_mutes_an_alert_from_the_tenant_page_and_removes_it(
    app: Any, tokens: dict[str, str], alertmanager: Alertmanager, sql: Any
) -> None:
    admin, csrf = _session(app, tokens["admin"])
    page = _text(admin.get("/tenants/acme"))
    form = _section(page, "mute-form", "</form>")
    assert '<option value="">all owner alerts</option>' in form
    assert "<option>TenantDailyCapNearlyReached</option>" in form
    assert "<option>ModelErrorSpike</option>" not in form  # admin alerts are not the tenant's

    no_reason = admin.post(
        "/tenants/acme/silences",
        data={"csrf_token": csrf, "alertname": "PhaseStalled", "duration_minutes": "60"},
    )
    assert no_reason.status_code == 400 and "reason" in _text(no_reason)
    no_csrf = admin.post(
        "/tenants/acme/silences",
        data={"alertname": "PhaseStalled", "duration_minutes": "60", "reason": "r"},
    )
    assert no_csrf.status_code == 400 and "CSRF" in _text(no_csrf)
    assert sql("SELECT count(*) FROM alert_silences") == [(0,)]

    resp = admin.post(
        "/tenants/acme/silences",
        data={
            "csrf_token": csrf,
            "alertname": "PhaseStalled",
            "duration_minutes": "240",
            "reason": "migration in progress",
        },
    )
    assert resp.status_code == 303 and resp.headers["Location"].endswith("#muting")
    [(silence_id, ends_at)] = sql("SELECT silence_id, ends_at FROM alert_silences")
    held = alertmanager.silence(silence_id)
    assert held["status"]["state"] == "active" and held["comment"] == "migration in progress"
    assert {m["name"]: m["value"] for m in held["matchers"]} == {
        "tenant": "acme",
        "alertname": "PhaseStalled",
    }
    assert held["createdBy"] == "test-admin"
    assert 3.9 * 3600 < (ends_at - datetime.now(UTC)).total_seconds() <= 4 * 3600

    page = _text(admin.get(resp.headers["Location"]))
    assert "Done: PhaseStalled muted until" in page
    listed = _section(page, "silences")
    assert f'data-silence="{silence_id}"' in listed
    assert "PhaseStalled" in listed and "migration in progress" in listed and "test-admin" in listed
    audit = _section(page, "audit")
    assert "alert.mute" in audit and "migration in progress" in audit
    api = app.test_client().get("/v1/alerts/silences", headers=bearer(tokens["admin"])).json
    assert [s["silence_id"] for s in api["silences"]] == [silence_id]

    removed = admin.post(f"/tenants/acme/silences/{silence_id}/remove", data={"csrf_token": csrf})
    assert removed.status_code == 303
    assert alertmanager.silence(silence_id)["status"]["state"] == "expired"
    page = _text(admin.get("/tenants/acme"))
    assert "No alert of this tenant is muted." in _section(page, "silences")
    again = admin.post(f"/tenants/acme/silences/{silence_id}/remove", data={"csrf_token": csrf})
    assert again.status_code == 404
    assert sql(
        "SELECT actor, actor_role, action, tenant_id, target FROM audit_log"
        " WHERE action LIKE 'alert.%' ORDER BY audit_id"
    ) == [
        ("test-admin", "admin", "alert.mute", "acme", silence_id),
        ("test-admin", "admin", "alert.unmute", "acme", silence_id),
    ]


def test_owners_mute_only_their_own_tenant(
    app: Any, tokens: dict[str, str], alertmanager: Alertmanager, sql: Any
) -> None:
    owner, csrf = _session(app, tokens["owner"])
    resp = owner.post(
        "/tenants/acme/silences",
        data={
            "csrf_token": csrf,
            "alertname": "",
            "duration_minutes": "60",
            "reason": "we know about the cap",
        },
    )
    assert resp.status_code == 303
    [(silence_id,)] = sql("SELECT silence_id FROM alert_silences")
    matchers = alertmanager.silence(silence_id)["matchers"]
    assert {m["name"]: m["value"] for m in matchers} == {"tenant": "acme", "audience": "owner"}
    assert "all owner alerts" in _section(_text(owner.get("/tenants/acme")), "silences")
    admin_alert = owner.post(
        "/tenants/acme/silences",
        data={
            "csrf_token": csrf,
            "alertname": "ModelErrorSpike",
            "duration_minutes": "60",
            "reason": "r",
        },
    )
    assert admin_alert.status_code == 400 and "is not an owner alert" in _text(admin_alert)

    other, other_csrf = _session(app, tokens["other_owner"])
    foreign = other.post(
        "/tenants/acme/silences",
        data={"csrf_token": other_csrf, "duration_minutes": "60", "reason": "hide their alerts"},
    )
    assert foreign.status_code == 404
    unmute = other.post(
        f"/tenants/acme/silences/{silence_id}/remove", data={"csrf_token": other_csrf}
    )
    assert unmute.status_code == 404
    via_own = other.post(
        f"/tenants/other/silences/{silence_id}/remove", data={"csrf_token": other_csrf}
    )
    assert via_own.status_code == 404  # the silence is acme's, whatever the URL says
    assert alertmanager.silence(silence_id)["status"]["state"] == "active"
    assert sql("SELECT count(*) FROM alert_silences") == [(1,)]

    support, support_csrf = _session(app, tokens["support"])
    page = _text(support.get("/tenants/acme"))
    assert silence_id in _section(page, "silences") and 'id="mute-form"' not in page
    assert "Remove</button>" not in _section(page, "silences")
    refused = support.post(
        "/tenants/acme/silences",
        data={"csrf_token": support_csrf, "duration_minutes": "60", "reason": "r"},
    )
    assert refused.status_code == 403


def test_muting_without_alertmanager_says_what_to_configure(
    db: Database, tokens: dict[str, str], sql: Any
) -> None:
    bare = create_app({"DATABASE": db, "TESTING": True})
    admin, csrf = _session(bare, tokens["admin"])
    resp = admin.post(
        "/tenants/acme/silences", data={"csrf_token": csrf, "duration_minutes": "60", "reason": "r"}
    )
    assert resp.status_code == 503 and "RUNLEDGER_ALERTMANAGER_URL" in _text(resp)
    assert sql("SELECT count(*) FROM audit_log WHERE action LIKE 'alert.%'") == [(0,)]


def test_admins_and_owners_edit_notification_settings(
    app: Any, tokens: dict[str, str], sql: Any
) -> None:
    owner, csrf = _session(app, tokens["owner"])
    slack = "https://hooks.slack.example/services/T0/B0/secret-part"
    resp = owner.post(
        "/tenants/acme/notifications",
        data={
            "csrf_token": csrf,
            "owner_emails": "ops@acme.example\nceo@acme.example",
            "slack_webhook_url": slack,
            "slack_opt_in": "true",
        },
    )
    assert resp.status_code == 303
    assert sql(
        "SELECT owner_emails, slack_webhook_url, slack_opt_in FROM tenants WHERE tenant_id = 'acme'"
    ) == [(["ops@acme.example", "ceo@acme.example"], slack, True)]
    page = _text(owner.get("/tenants/acme"))
    form = _section(page, "notifications-form", "</form>")
    assert "ops@acme.example\nceo@acme.example" in form
    assert "https://hooks.slack.example/…" in form and "secret-part" not in page

    # A blank URL keeps the stored one; unticking the box opts out.
    owner.post(
        "/tenants/acme/notifications",
        data={"csrf_token": csrf, "owner_emails": "ops@acme.example", "slack_webhook_url": ""},
    )
    assert sql(
        "SELECT owner_emails, slack_webhook_url, slack_opt_in FROM tenants WHERE tenant_id = 'acme'"
    ) == [(["ops@acme.example"], slack, False)]
    bad = owner.post(
        "/tenants/acme/notifications", data={"csrf_token": csrf, "owner_emails": "not-an-address"}
    )
    assert bad.status_code == 400 and "owner_emails" in _text(bad)
    opted = owner.post(
        "/tenants/acme/notifications",
        data={"csrf_token": csrf, "clear_slack": "true", "slack_opt_in": "true"},
    )
    assert opted.status_code == 400 and "slack_webhook_url" in _text(opted)
    assert sql("SELECT slack_webhook_url FROM tenants WHERE tenant_id = 'acme'") == [(slack,)]

    admin, admin_csrf = _session(app, tokens["admin"])
    cleared = admin.post(
        "/tenants/acme/notifications",
        data={"csrf_token": admin_csrf, "owner_emails": "ops@acme.example", "clear_slack": "true"},
    )
    assert cleared.status_code == 303
    assert sql("SELECT slack_webhook_url FROM tenants WHERE tenant_id = 'acme'") == [(None,)]
    audit = sql(
        "SELECT actor_role, action, details->>'owner_emails' FROM audit_log"
        " WHERE action = 'tenant.notifications' ORDER BY audit_id"
    )
    assert audit == [
        ("owner", "tenant.notifications", "2"),
        ("owner", "tenant.notifications", "1"),
        ("admin", "tenant.notifications", "1"),
    ]
    assert "ops@acme.example" not in str(sql("SELECT details FROM audit_log"))

    other, other_csrf = _session(app, tokens["other_owner"])
    foreign = other.post(
        "/tenants/acme/notifications",
        data={"csrf_token": other_csrf, "owner_emails": "thief@evil.example"},
    )
    assert foreign.status_code == 404
    support, _ = _session(app, tokens["support"])
    assert 'id="notifications-form"' not in _text(support.get("/tenants/acme"))


def test_admins_judge_banners_of_real_alerts(
    app: Any,
    tokens: dict[str, str],
    make_tenant: Callable[..., str],
    make_token: Callable[..., str],
    sql: Any,
) -> None:
    api = app.test_client()
    fired = [
        am_alert(
            "ModelErrorSpike",
            fingerprint="a1",
            model="gpt-a",
            audience="admin",
            severity="critical",
        ),
        am_alert("PhaseStalled", fingerprint="b2", tenant="acme", phase="build", audience="owner"),
    ]
    assert api.post("/v1/alerts/webhook", json=am_payload(*fired), headers=HOOK).status_code == 200
    make_tenant("tiny", "1")  # a refused lease: a banner with no Alertmanager alert behind it
    lease = {"tenant_id": "tiny", "holder": "run-1", "min_usd": "2"}
    refused = api.post("/v1/caps/leases", json=lease, headers=bearer(make_token("agent", "tiny")))
    assert refused.status_code == 402

    admin, csrf = _session(app, tokens["admin"])
    overview = _text(admin.get("/admin"))
    [(spike_id,)] = sql("SELECT notification_id FROM notifications WHERE fingerprint = 'a1'")
    banner = _section(overview, "banners", "</section>")
    assert f'action="/banners/{spike_id}/judge"' in banner and "True positive" in banner
    resp = admin.post(
        f"/banners/{spike_id}/judge",
        data={
            "csrf_token": csrf,
            "outcome": "false_positive",
            "note": "one bad deploy",
            "back": "/admin?tenant=acme",
        },
    )
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/admin?tenant=acme&")
    assert "Done: alert judged false positive" in _text(admin.get(resp.headers["Location"]))
    assert sql(
        "SELECT fingerprint, alertname, audience, tenant_id, outcome, judged_by, note"
        " FROM alert_outcomes"
    ) == [
        ("a1", "ModelErrorSpike", "admin", None, "false_positive", "test-admin", "one bad deploy")
    ]
    banner = _section(_text(admin.get("/admin")), "banners", "</section>")
    assert "Judged false positive by test-admin: one bad deploy" in banner
    assert f"/banners/{spike_id}/judge" not in banner
    again = admin.post(
        f"/banners/{spike_id}/judge", data={"csrf_token": csrf, "outcome": "true_positive"}
    )
    assert again.status_code == 409 and "judged already" in _text(again)

    # The tenant's owner banners show on its page for admins, judged there too.
    tenant_banners = _section(_text(admin.get("/tenants/acme")), "banners", "</section>")
    [(stalled_id,)] = sql("SELECT notification_id FROM notifications WHERE fingerprint = 'b2'")
    assert f"/banners/{stalled_id}/judge" in tenant_banners
    ok = admin.post(
        f"/banners/{stalled_id}/judge",
        data={"csrf_token": csrf, "outcome": "true_positive", "back": "//evil.example/x"},
    )
    assert ok.status_code == 303 and ok.headers["Location"].startswith("/?done=")
    [(cap_id,)] = sql("SELECT notification_id FROM notifications WHERE source = 'cap_block'")
    assert f"/banners/{cap_id}/judge" not in _text(admin.get("/tenants/tiny"))
    nothing = admin.post(
        f"/banners/{cap_id}/judge", data={"csrf_token": csrf, "outcome": "true_positive"}
    )
    assert nothing.status_code == 409
    bad = admin.post(f"/banners/{stalled_id}/judge", data={"csrf_token": csrf, "outcome": "maybe"})
    assert bad.status_code == 400 and "outcome" in _text(bad)
    assert sql(
        "SELECT actor, action, tenant_id, target, details->>'outcome' FROM audit_log"
        " WHERE action = 'alert.judge' ORDER BY audit_id"
    ) == [
        ("test-admin", "alert.judge", None, "a1", "false_positive"),
        ("test-admin", "alert.judge", "acme", "b2", "true_positive"),
    ]

    owner, owner_csrf = _session(app, tokens["owner"])
    owner_banners = _section(_text(owner.get("/tenants/acme")), "banners", "</section>")
    assert "PhaseStalled" in owner_banners or "Judged" in owner_banners
    assert "/judge" not in owner_banners
    forbidden = owner.post(
        f"/banners/{stalled_id}/judge", data={"csrf_token": owner_csrf, "outcome": "false_positive"}
    )
    assert forbidden.status_code == 403


def test_admins_unfreeze_a_publisher_from_the_project_page_and_the_overview(
    app: Any, db: Database, tokens: dict[str, str], make_token: Callable[..., str], sql: Any
) -> None:
    api = app.test_client()
    seed_run(
        api,
        make_token("agent", "acme"),
        tenant="acme",
        project="site",
        run="r1",
        playbook="landing",
    )
    day = datetime.now(UTC).date()
    with db.connection() as conn:
        for playbook in ("landing", "blog"):
            freeze_publisher(
                conn,
                playbook=playbook,
                reason=f"{playbook}: 4 of 5 sampled failed",
                actor="quality-sampler",
                day=day,
                sampled=5,
                failed=4,
                failure_rate=0.8,
                threshold=0.2,
            )

    support, support_csrf = _session(app, tokens["support"])
    assert "landing: 4 of 5 sampled failed" in _text(support.get("/projects/site"))
    assert "Unfreeze</button>" not in _text(support.get("/projects/site"))
    frozen = _section(_text(support.get("/admin")), "frozen-publishers")
    assert "landing" in frozen and "blog" in frozen and "Unfreeze</button>" not in frozen
    assert (
        support.post(
            "/playbooks/landing/unfreeze", data={"csrf_token": support_csrf, "reason": "r"}
        ).status_code
        == 403
    )

    admin, csrf = _session(app, tokens["admin"])
    section = _section(_text(admin.get("/projects/site")), "why-blocked", 'id="next-action"')
    assert 'action="/playbooks/landing/unfreeze"' in section
    back = re.search(r'name="back" value="([^"]+)"', section)
    assert back and back.group(1) == "/projects/site#why-blocked"
    missing = admin.post("/playbooks/landing/unfreeze", data={"csrf_token": csrf, "back": back[1]})
    assert missing.status_code == 400 and "reason" in _text(missing)
    resp = admin.post(
        "/playbooks/landing/unfreeze",
        data={"csrf_token": csrf, "reason": "sample was stale", "back": back.group(1)},
    )
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/projects/site?done=")
    state = api.get("/v1/playbooks/landing/freeze", headers=bearer(tokens["owner"])).json
    assert state["frozen"] is False
    page = _text(admin.get(resp.headers["Location"]))
    assert "Done: Publisher of landing unfrozen" in page and "publisher_frozen" not in page

    overview = _text(admin.get("/admin"))
    frozen = _section(overview, "frozen-publishers")
    assert "landing" not in frozen and 'action="/playbooks/blog/unfreeze"' in frozen
    assert (
        admin.post(
            "/playbooks/blog/unfreeze", data={"csrf_token": csrf, "reason": "drift explained"}
        ).status_code
        == 303
    )
    assert "No Publisher is frozen." in _section(_text(admin.get("/admin")), "frozen-publishers")
    twice = admin.post("/playbooks/blog/unfreeze", data={"csrf_token": csrf, "reason": "again"})
    assert twice.status_code == 409 and "is not frozen" in _text(twice)
    assert sql(
        "SELECT actor, actor_role, target, details->>'reason' FROM audit_log"
        " WHERE action = 'publisher.unfreeze' ORDER BY audit_id"
    ) == [
        ("test-admin", "admin", "landing", "sample was stale"),
        ("test-admin", "admin", "blog", "drift explained"),
    ]
