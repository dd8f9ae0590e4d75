"""Request bodies of the control service's JSON APIs, one pydantic model per endpoint.

Ingest's events are modelled in ``runledger.events``. Dollar fields are
``runledger.money.Usd``; strings have bounded lengths and refuse NUL characters; times are
``runledger.events.Timestamp`` (an offset and a range PostgreSQL accepts).
``_batch.parse_body`` validates a body against its model and answers 400 naming every
invalid field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from runledger.events import MAX_SNAPSHOT_CHARS, Ident, ModelName, Slug, Timestamp
from runledger.money import Usd
from runledger.store.leases import DEFAULT_LEASE_TTL_S

__all__ = [
    "MAX_LEASE_TTL_S",
    "MAX_PROMPT_CHARS",
    "ArtifactSnapshotRecord",
    "CapRaise",
    "LeaseClose",
    "LeaseOpen",
    "LeaseSync",
    "PromptAuditRecord",
    "Reclaim",
    "RevertRaise",
    "TemporaryRaise",
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
