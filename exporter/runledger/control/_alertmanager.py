"""Alertmanager's API v2, for muting: create and expire silences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests

__all__ = ["AlertmanagerClient", "AlertmanagerError"]


class AlertmanagerError(RuntimeError):
    """Alertmanager could not be reached or refused the request."""


class AlertmanagerClient:
    """A small client of ``/api/v2/silences`` on ``base_url``."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            resp = requests.request(
                method, f"{self.base_url}/api/v2{path}", timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise AlertmanagerError(f"Alertmanager unreachable ({type(exc).__name__})") from None
        if resp.status_code >= 300:
            detail = resp.text.strip()[:200]
            raise AlertmanagerError(f"Alertmanager answered {resp.status_code}: {detail}")
        return resp

    def create_silence(
        self,
        matchers: dict[str, str],
        *,
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """Create a silence of alerts whose labels equal ``matchers``; return its id."""
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": starts_at.isoformat(),
            "endsAt": ends_at.isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        return str(self._call("POST", "/silences", json=body).json()["silenceID"])

    def expire_silence(self, silence_id: str) -> None:
        """Expire a silence now (Alertmanager keeps expired silences for a while)."""
        self._call("DELETE", f"/silence/{silence_id}")
