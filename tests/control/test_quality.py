"""Quality API: artifact snapshots (redacted, bounded, tenant-checked), freeze state, unfreeze."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runledger.events import MAX_SNAPSHOT_CHARS
from runledger.store.quality import freeze_publisher


def _record(**over: Any) -> dict[str, Any]:
    rec = {
        "snapshot_id": str(uuid.uuid4()), "tenant_id": "acme", "project_id": "p1",
        "run_id": "r1", "playbook": "Landing", "phase": "build", "role": "implementer",
        "artifact_path": "site/index.html", "artifact_version": 1,
        "content": "# Site\n\n## Hero\nCall jane.doe@example.com or +44 20 7946 0958 now.\n",
        "created_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    rec.update(over)
    return rec


@pytest.fixture
def agent_auth(make_tenant: Callable[..., str], make_token: Callable[..., str]) -> dict[str, str]:
    make_tenant("acme")
    make_tenant("globex")
    return {"Authorization": f"Bearer {make_token('agent', 'acme')}"}


def test_snapshots_are_stored_redacted_with_their_features_once(
    client: Any, agent_auth: dict[str, str], sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    rec = _record()
    resp = client.post("/v1/artifacts", json={"records": [rec]}, headers=agent_auth)
    assert resp.status_code == 200, resp.json
    assert resp.json["results"] == [
        {"index": 0, "status": "accepted", "snapshot_id": rec["snapshot_id"]}
    ]
    [(playbook, media, content, feats)] = sql(
        "SELECT playbook, media_type, content, features FROM artifact_snapshots"
    )
    assert (playbook, media) == ("landing", "text/markdown")
    assert "jane.doe@example.com" not in content and "7946" not in content
    assert "[REDACTED:" in content
    assert feats["headings"] == 2 and feats["section_names"] == ["hero"]
    # The same version again (another id) is a duplicate: an artifact version never changes.
    again = _record(content="# other")
    resp = client.post("/v1/artifacts", json={"records": [rec, again]}, headers=agent_auth)
    assert [r["status"] for r in resp.json["results"]] == ["duplicate", "duplicate"]


def test_bad_snapshots_are_refused_naming_the_field(
    client: Any, agent_auth: dict[str, str], make_token: Callable[..., str]
) -> None:
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    records = [
        _record(content="x" * (MAX_SNAPSHOT_CHARS + 1)),
        _record(tenant_id="nobody"),
        _record(created_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        _record(artifact_version=0),
        _record(media_type="image/png"),
        _record(content="a\x00b"),
        _record(snapshot_id="not-a-uuid"),
    ]
    resp = client.post("/v1/artifacts", json={"records": records}, headers=admin)
    assert resp.status_code == 200
    assert resp.json["rejected"] == len(records)
    fields = [r["errors"][0]["field"] for r in resp.json["results"]]
    assert fields == [
        "records[0].content", "records[1].tenant_id", "records[2].created_at",
        "records[3].artifact_version", "records[4].media_type", "records[5].content",
        "records[6].snapshot_id",
    ]  # fmt: skip
    messages = [r["errors"][0]["message"] for r in resp.json["results"]]
    assert messages[0] == f"must be at most {MAX_SNAPSHOT_CHARS} characters"
    assert messages[1] == "unknown tenant 'nobody'"
    assert messages[5] == "must not contain NUL characters"
    foreign = client.post(
        "/v1/artifacts", json={"records": [_record(), _record(tenant_id="globex")]},
        headers=agent_auth,
    )  # fmt: skip
    assert foreign.status_code == 403
    assert foreign.json["fields"] == [
        {"field": "records[1].tenant_id", "message": "this token may write only tenant 'acme'"}
    ]
    assert (
        client.post("/v1/artifacts", json={"records": "x"}, headers=agent_auth).status_code == 400
    )


def test_roles_and_the_freeze_state(
    client: Any, agent_auth: dict[str, str], make_token: Callable[..., str], db: Any
) -> None:
    owner = {"Authorization": f"Bearer {make_token('owner', 'acme')}"}
    assert (
        client.post("/v1/artifacts", json={"records": [_record()]}, headers=owner).status_code
        == 403
    )
    assert client.get("/v1/playbooks/landing/freeze").status_code == 401
    state = client.get("/v1/playbooks/landing/freeze", headers=owner)
    assert state.json == {"playbook": "landing", "frozen": False, "freeze": None}
    with db.connection() as conn:
        freeze_publisher(
            conn, playbook="landing", reason="4 of 5 failed", actor="quality-sampler",
            day=datetime.now(UTC).date(), sampled=5, failed=4, failure_rate=0.8, threshold=0.2,
        )  # fmt: skip
    state = client.get("/v1/playbooks/Landing/freeze", headers=agent_auth)
    assert state.json["frozen"] is True
    assert state.json["freeze"]["reason"] == "4 of 5 failed"
    assert state.json["freeze"]["failure_rate"] == 0.8
    bad = client.get("/v1/playbooks/no%20way/freeze", headers=owner)
    assert bad.status_code == 400
    assert bad.json["fields"] == [
        {"field": "playbook",
         "message": "must be 1-64 letters, digits, '_' or '-', starting with a letter"}
    ]  # fmt: skip
    url = "/v1/playbooks/landing/unfreeze"
    assert client.post(url, json={"reason": "ok"}, headers=agent_auth).status_code == 403
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    missing = client.post(url, json={}, headers=admin)
    assert missing.status_code == 400
    assert missing.json["fields"] == [{"field": "reason", "message": "is required"}]
    extra = client.post(url, json={"reason": "ok", "force": True}, headers=admin)
    assert extra.json["fields"] == [{"field": "force", "message": "is not a known field"}]
    assert client.post(url, json={"reason": "ok"}, headers=admin).status_code == 200
