"""Helpers for alert tests: a real SMTP server (aiosmtpd), a Slack stand-in, Alertmanager."""

from __future__ import annotations

import email
import hashlib
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml
from aiosmtpd.controller import Controller

from _support import ROOT, free_port, stop_process

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
AM_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"

__all__ = [
    "AMTOOL",
    "AM_CONFIG",
    "WEBHOOK_TOKEN",
    "Alertmanager",
    "SlackStandIn",
    "SmtpSink",
    "am_alert",
    "am_payload",
    "judge_alerts",
    "rule_alert",
    "start_alertmanager",
    "wait_until",
]


def wait_until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {got!r})")
        time.sleep(step)


class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) keeping every message it receives; it
    refuses recipients whose address starts with ``refused``."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if address.startswith("refused"):  # a mailbox the server refuses
                    return "550 mailbox unavailable"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content)
                msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
                with sink.lock:
                    sink.messages.append(msg)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list[Message]:
        """Return the messages whose envelope named ``address``."""
        with self.lock:
            return [m for m in self.messages if address in m["X-Envelope-To"]]

    def close(self) -> None:
        self.controller.stop()


class SlackStandIn:
    """A local HTTP server standing in for tenants' Slack incoming webhooks.

    Each path is one tenant's webhook; ``fail`` paths answer 500. Every request is kept.
    """

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.fail: set[str] = set()
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with stand_in.lock:
                    stand_in.posts.append((self.path, json.loads(body or b"{}")))
                    failing = self.path in stand_in.fail
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"server error" if failing else b"ok")

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body in self.posts if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Alertmanager:
    """A real Alertmanager on a free loopback port with its own data directory."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = workdir / f"am-data-{self.port}"
        self.log = open(workdir / f"alertmanager-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=warn"],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        try:
            wait_until(self._ready, 30, "alertmanager ready")
        except Exception:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"alertmanager exited with {self.proc.returncode}")
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        params += [("silenced", "true"), ("inhibited", "true"), ("active", "true")]
        resp = requests.get(self.url + "/api/v2/alerts", params=params, timeout=5)
        resp.raise_for_status()
        return list(resp.json())

    def silence(self, silence_id: str) -> dict[str, Any]:
        resp = requests.get(f"{self.url}/api/v2/silence/{silence_id}", timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def start_alertmanager(
    workdir: Path,
    *,
    secret: str,
    control_url: str = "http://127.0.0.1:9",
    timings: dict[str, str] | None = None,
) -> Alertmanager:
    """Start a real Alertmanager with the shipped routes, its webhooks posting to
    ``control_url`` with ``secret`` (the default address refuses: for tests that only mute)."""
    from runledger.alertmanager_config import local_alertmanager_config

    token = workdir / "webhook-token"
    token.write_text(secret)
    config = local_alertmanager_config(
        ROOT, workdir, control_url=control_url, token_file=token, timings=timings
    )
    return Alertmanager(config, workdir)


def am_alert(
    alertname: str,
    *,
    status: str = "firing",
    fingerprint: str = "0123456789abcdef",
    starts_at: str = "2026-01-05T10:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager's webhook sends it (payload version 4)."""
    return {
        "status": status,
        "labels": {"alertname": alertname, **labels},
        "annotations": {
            "summary": f"{alertname} summary.",
            "description": f"{alertname} for {labels.get('tenant', 'everyone')}.",
            "runbook_url": f"docs/runbook.md#{alertname.lower()}",
            "dashboard": "/d/runledger-admin",
        },
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def am_payload(*alerts: dict[str, Any], receiver: str = "owner") -> dict[str, Any]:
    """A whole webhook notification around ``alerts``."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "status": status,
        "receiver": receiver,
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


_HOLE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value(?:\s*\|\s*(\w+))?)\s*\}\}")


def _humanize(value: float) -> str:
    return f"{value:.4g}"


def _render(text: str, labels: dict[str, str], value: float) -> str:
    """Fill a shipped annotation the way Prometheus does for the holes our rules use:
    ``{{ $labels.x }}``, ``{{ $value }}``, ``{{ $value | humanize }}`` and
    ``{{ $value | humanizePercentage }}``; any other template is an error here."""

    def hole(match: re.Match[str]) -> str:
        if match[2]:
            return labels.get(match[2], "")
        if match[3] is None:
            return f"{value:g}"
        if match[3] == "humanize":
            return _humanize(value)
        if match[3] == "humanizePercentage":
            return f"{_humanize(value * 100)}%"
        raise AssertionError(f"template {match[0]!r} is not rendered by this helper")

    out = _HOLE.sub(hole, text)
    assert "{{" not in out, f"unrendered template left in {out!r}"
    return out


def rule_alert(alertname: str, *, value: float = 1.0, **labels: str) -> dict[str, Any]:
    """One alert of the shipped rule files (prometheus/alerts/) as Alertmanager's webhook
    delivers it: the rule's labels plus ``labels``, its annotations filled in for them and
    ``value``, and a fingerprint of the label set."""
    for path in sorted((ROOT / "prometheus" / "alerts").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") != alertname:
                    continue
                all_labels = {"alertname": alertname, **rule.get("labels", {}), **labels}
                fingerprint = hashlib.sha256(
                    json.dumps(all_labels, sort_keys=True).encode()
                ).hexdigest()[:16]
                started = datetime.now(UTC).replace(microsecond=0).isoformat()
                alert = am_alert(alertname, fingerprint=fingerprint, starts_at=started)
                alert["labels"] = all_labels
                alert["annotations"] = {
                    k: _render(v, all_labels, value) for k, v in rule["annotations"].items()
                }
                return alert
    raise AssertionError(f"no alerting rule {alertname!r} in prometheus/alerts/")


WEBHOOK_TOKEN = "live-test-webhook-secret"
"""The webhook secret of control services started by tests that judge alerts."""


def judge_alerts(base: str, admin: str, alertname: str, outcomes: list[str], tag: str) -> None:
    """Alertmanager's webhook delivers fired alerts (one per outcome) to the control service
    at ``base``; an admin then judges each one through ``POST /v1/alerts/outcomes``."""

    started = datetime.now(UTC).isoformat()
    alerts = [
        {"status": "firing", "startsAt": started, "fingerprint": f"{tag}{i:04x}",
         "labels": {"alertname": alertname, "tenant": "acme", "audience": "owner",
                    "severity": "warning"},
         "annotations": {"summary": "80% of the cap."}}
        for i in range(len(outcomes))
    ]  # fmt: skip
    hook = requests.post(
        f"{base}/v1/alerts/webhook",
        json={"version": "4", "status": "firing", "receiver": "owner", "alerts": alerts},
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, timeout=30,
    )  # fmt: skip
    assert hook.status_code == 200, hook.text
    for alert, outcome in zip(alerts, outcomes, strict=True):
        judged = requests.post(
            f"{base}/v1/alerts/outcomes",
            json={"fingerprint": alert["fingerprint"], "alertname": alertname,
                  "started_at": started, "outcome": outcome},
            headers={"Authorization": f"Bearer {admin}"}, timeout=30,
        )  # fmt: skip
        assert judged.status_code == 201, judged.text
