"""Request bodies of the control service's JSON APIs, one pydantic model per endpoint.

Ingest's events are modelled in ``runledger.events``. Dollar fields are
``runledger.money.Usd``; strings have bounded lengths and refuse NUL characters; times are
``runledger.events.Timestamp`` (an offset and a range PostgreSQL accepts).
``_batch.parse_body`` validates a body against its model and answers 400 naming every
invalid field.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from runledger import _env
from runledger.events import MAX_SNAPSHOT_CHARS, Ident, ModelName, Slug, Timestamp
from runledger.money import Usd
from runledger.store.leases import DEFAULT_LEASE_TTL_S

__all__ = [
    "MAX_LEASE_TTL_S",
    "MAX_PROMPT_CHARS",
    "MAX_SILENCE_MINUTES",
    "AlertOutcome",
    "AlertmanagerWebhook",
    "ArtifactSnapshotRecord",
    "CapRaise",
    "LeaseClose",
    "LeaseOpen",
    "LeaseSync",
    "PromptAuditRecord",
    "Reclaim",
    "RevertRaise",
    "SilenceCreate",
    "TemporaryRaise",
    "TenantNotifications",
    "Unfreeze",
]

MAX_LEASE_TTL_S = 6 * 3600.0
"""Longest lease lifetime a client may ask for; dead workers' leases come back within it."""

MAX_PROMPT_CHARS = 64 * 1024
"""Longest prompt or response stored; longer text is refused, not cut."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _text(max_length: int, *, min_length: int = 1, strip: bool = False) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, strip_whitespace=strip)


Holder = Annotated[str, _text(200), AfterValidator(_no_nul)]
"""Who holds a lease: the run id, 1-200 characters."""

Role = Annotated[str, _text(64), AfterValidator(_no_nul)]
Reason = Annotated[str, _text(500, strip=True), AfterValidator(_no_nul)]
"""Why a cap changes (audited): 1-500 characters, surrounding spaces dropped."""

Prompt = Annotated[str, _text(MAX_PROMPT_CHARS, min_length=0), AfterValidator(_no_nul)]
TtlSeconds = Annotated[float, Field(ge=1.0, le=MAX_LEASE_TTL_S)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeaseOpen(_Request):
    """``POST /v1/caps/leases``: reserve up to ``want_usd``, at least ``min_usd``."""

    tenant_id: Ident
    holder: Holder
    role: Role | None = None
    min_usd: Usd
    want_usd: Usd | None = None
    ttl_s: TtlSeconds = DEFAULT_LEASE_TTL_S

    @property
    def want(self) -> Decimal:
        """Return what to reserve: ``want_usd``, never below ``min_usd``."""
        return max(self.want_usd or Decimal(0), self.min_usd)


class LeaseSync(_Request):
    """``POST /v1/caps/leases/<id>/sync``: settle cumulative spend, renew, top up."""

    spent_usd: Usd
    want_usd: Usd = Decimal(0)
    min_usd: Usd = Decimal(0)
    keep_usd: Usd | None = None
    ttl_s: TtlSeconds = DEFAULT_LEASE_TTL_S

    @property
    def want(self) -> Decimal:
        """Return the top-up to ask for: ``want_usd``, never below ``min_usd``."""
        return max(self.want_usd, self.min_usd)


class LeaseClose(_Request):
    """``POST /v1/caps/leases/<id>/close``: settle cumulative spend, give back the rest."""

    spent_usd: Usd


class Reclaim(_Request):
    """``POST /v1/caps/reclaim``: no fields."""


class CapRaise(_Request):
    """``POST /v1/caps/<tenant>/raises``: a new cap, permanent or until ``expires_at``."""

    new_cap_usd: Usd
    reason: Reason
    expires_at: Timestamp | None = None


class TemporaryRaise(_Request):
    """``POST /v1/caps/<tenant>/raises/temporary``: the one-click raise."""

    reason: Reason
    new_cap_usd: Usd | None = None


class RevertRaise(_Request):
    """``POST /v1/caps/<tenant>/raises/<id>/revert``: end a temporary raise early."""

    reason: Reason


class PromptAuditRecord(_Request):
    """One redacted prompt (and response) of a run, in ``POST /v1/prompt-audit``."""

    audit_id: Annotated[str, _text(64), AfterValidator(_no_nul)]
    tenant_id: Ident
    run_id: Ident
    model: ModelName | None = None
    prompt: Prompt
    response: Prompt | None = None
    created_at: Timestamp = Field(description="When the prompt was sent, with a UTC offset.")


MediaTypeName = Literal["text/html", "text/markdown", "application/json", "text/plain"]


class ArtifactSnapshotRecord(_Request):
    """One artifact's content, in ``POST /v1/artifacts`` (redacted again on arrival)."""

    snapshot_id: UUID
    tenant_id: Ident
    project_id: Ident
    run_id: Ident
    playbook: Slug | None = None
    phase: Slug
    role: Slug
    artifact_path: Annotated[str, _text(512), AfterValidator(_no_nul)]
    artifact_version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    media_type: MediaTypeName | None = None
    content: Annotated[str, _text(MAX_SNAPSHOT_CHARS), AfterValidator(_no_nul)]
    created_at: Timestamp = Field(description="When the artifact was written, with a UTC offset.")


class Unfreeze(_Request):
    """``POST /v1/playbooks/<playbook>/unfreeze``: lift the Publisher freeze (audited)."""

    reason: Reason


# -- alerts (control/alerts.py) ---------------------------------------------------------------

MAX_SILENCE_MINUTES = 30 * 24 * 60
"""Longest mute: 30 days; a longer one is a threshold to change, not an alert to hide."""

AlertName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$")]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,64}$")]
Note = Annotated[str, _text(500, min_length=0, strip=True), AfterValidator(_no_nul)]
LabelText = Annotated[str, _text(2000, min_length=0), AfterValidator(_no_nul)]


def _https_unless_allowed(url: AnyHttpUrl) -> AnyHttpUrl:
    """Refuse a plain-http webhook: the control service posts to it, so it must not be a way
    to reach services on the control service's own network (RUNLEDGER_ALLOW_HTTP_WEBHOOKS=1
    allows http, for a local test receiver)."""
    if url.scheme != "https" and os.environ.get(_env.ALLOW_HTTP_WEBHOOKS) != "1":
        raise ValueError("must be an https:// URL (a Slack incoming webhook)")
    return url


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook notification (fields Alertmanager may add are
    ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, LabelText]
    annotations: dict[str, LabelText] = Field(default_factory=dict)
    startsAt: Timestamp
    fingerprint: Fingerprint


class AlertmanagerWebhook(BaseModel):
    """``POST /v1/alerts/webhook``: Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Annotated[str, _text(200)]
    alerts: Annotated[list[WebhookAlert], Field(max_length=1000)]


class SilenceCreate(_Request):
    """``POST /v1/alerts/silences``: mute one alert (or all owner alerts) of a tenant."""

    tenant: Ident
    alertname: AlertName | None = None
    duration_minutes: Annotated[int, Field(ge=1, le=MAX_SILENCE_MINUTES)] | None = None
    ends_at: Timestamp | None = None
    reason: Reason


class AlertOutcome(_Request):
    """``POST /v1/alerts/outcomes``: an admin judges a fired alert."""

    fingerprint: Fingerprint
    alertname: AlertName
    started_at: Timestamp
    outcome: Literal["true_positive", "false_positive"]
    note: Note | None = None


class TenantNotifications(_Request):
    """``PUT /v1/tenants/<id>/notifications``: where the tenant's owner alerts go."""

    owner_emails: Annotated[list[EmailStr], Field(max_length=20)] = Field(default_factory=list)
    slack_webhook_url: Annotated[AnyHttpUrl, AfterValidator(_https_unless_allowed)] | None = None
    slack_opt_in: bool = False
