"""alertmanager.yml for a loopback stack: the shipped routes, wired to a local control service.

``runledger up`` uses it; so do the end-to-end test and the alert latency benchmark, with
shorter grouping times. Routing, grouping keys and inhibition are never changed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["local_alertmanager_config", "webhook_token"]


def webhook_token(path: Path) -> str:
    """Return the webhook secret kept in ``path``, creating it (mode 0600) the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.write_text(token)
    path.chmod(0o600)
    return token


def _routes(route: dict[str, Any]) -> list[dict[str, Any]]:
    found = [route]
    for child in route.get("routes", []):
        found += _routes(child)
    return found


def local_alertmanager_config(
    root: Path,
    out_dir: Path,
    *,
    control_url: str,
    token_file: Path,
    smtp: tuple[str, int] | None = None,
    admin_email: str | None = None,
    timings: Mapping[str, str] | None = None,
) -> Path:
    """Write ``out_dir/alertmanager.yml`` from ``root/alertmanager/alertmanager.yml``.

    Args:
        control_url: the control service every webhook receiver posts to.
        token_file: the file holding the webhook's bearer secret.
        smtp: (host, port) of a plain SMTP relay for the admin email; None drops the email
            receivers (nothing to send through).
        admin_email: the on-call address instead of the shipped placeholder.
        timings: ``group_wait``/``group_interval``/``repeat_interval`` for every route that
            sets them (tests and benchmarks shorten them).
    """
    config: dict[str, Any] = yaml.safe_load(
        (root / "alertmanager" / "alertmanager.yml").read_text()
    )
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{control_url.rstrip('/')}/v1/alerts/webhook"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        if smtp is None:
            receiver.pop("email_configs", None)
        elif admin_email:
            for email in receiver.get("email_configs", []):
                email["to"] = admin_email
    if smtp is not None:
        config["global"]["smtp_smarthost"] = f"{smtp[0]}:{smtp[1]}"
        config["global"]["smtp_require_tls"] = False
    for route in _routes(config["route"]):
        for key, value in (timings or {}).items():
            if key in route or route is config["route"]:
                route[key] = value
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "alertmanager.yml"
    header = (
        "# Generated from alertmanager/alertmanager.yml for a loopback stack; edit that file.\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path
