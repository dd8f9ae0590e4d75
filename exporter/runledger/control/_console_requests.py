"""Request bodies and query strings of the console's APIs and forms, one model each.

Kept beside ``_requests.py`` (the ledger's own APIs) so the console's models stay together;
``parse_body`` validates JSON bodies and ``parse_args``/``parse_form`` the query string and
form posts, answering 400 naming every invalid field.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from runledger.events import Ident, ModelName, Slug
from runledger.money import Usd

__all__ = [
    "ClaimRerun",
    "EmbedLink",
    "ExportQuery",
    "Impersonate",
    "JudgeForm",
    "NotificationsForm",
    "OverviewQuery",
    "Pause",
    "RaiseCapForm",
    "Reopen",
    "Rerun",
    "TokenVisibility",
    "UnfreezeForm",
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, strip_whitespace=True),
    AfterValidator(_no_nul),
]
"""Why (audited): 1-500 characters, surrounding spaces dropped."""

Holder = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_nul)]

MAX_EMBED_MINUTES = 30 * 24 * 60
"""Longest an embed link lives: 30 days."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pause(_Model):
    """``POST /v1/tenants/<tenant>/pause`` and ``/resume``: why."""

    reason: Reason


class Reopen(_Model):
    """``POST /v1/projects/<project>/reopen``: the phase to go back to, and why."""

    phase: Slug
    reason: Reason


class Rerun(_Model):
    """``POST /v1/runs/<run>/rerun``: why the step runs again."""

    reason: Reason


class ClaimRerun(_Model):
    """``POST /v1/tenants/<tenant>/reruns/claim``: who claims (a Coordinator's name)."""

    holder: Holder


class TokenVisibility(_Model):
    """``PUT /v1/tenants/<tenant>/owner-token-visibility``: may owners see token counts."""

    allowed: bool
    reason: Reason


class EmbedLink(_Model):
    """``POST /v1/tenants/<tenant>/embed-links``: how long the link lives."""

    ttl_minutes: int = Field(default=7 * 24 * 60, ge=1, le=MAX_EMBED_MINUTES)


class Impersonate(_Model):
    """Console form: support acts as a tenant's owner, and why."""

    tenant: Ident
    reason: Reason


class RaiseCapForm(_Model):
    """Console form: a new cap (permanent, or for 72 hours when ``temporary``), and why."""

    new_cap_usd: Usd | None = None
    reason: Reason
    temporary: bool = False


Back = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
"""The page a form returns to (a path of this service; anything else goes home)."""


class JudgeForm(_Model):
    """Console form on a banner: was its alert right, and an optional note."""

    outcome: Literal["true_positive", "false_positive"]
    note: Annotated[str, StringConstraints(max_length=500, strip_whitespace=True),
                    AfterValidator(_no_nul)] | None = None  # fmt: skip
    back: Back | None = None


class UnfreezeForm(_Model):
    """Console form: lift a playbook's Publisher freeze, and why."""

    reason: Reason
    back: Back | None = None


class NotificationsForm(_Model):
    """Console form: where a tenant's owner alerts go. Addresses one per line (or comma
    separated); a blank Slack URL keeps the current one unless ``clear_slack``."""

    owner_emails: Annotated[str, StringConstraints(max_length=5000), AfterValidator(_no_nul)] = ""
    slack_webhook_url: Annotated[str, StringConstraints(max_length=2000, strip_whitespace=True),
                                 AfterValidator(_no_nul)] | None = None  # fmt: skip
    slack_opt_in: bool = False
    clear_slack: bool = False

    def emails(self) -> list[str]:
        """Return the addresses as a list, blanks dropped."""
        return [e for e in re.split(r"[\s,;]+", self.owner_emails) if e]


def _bound(end: bool) -> BeforeValidator:
    """Read ``YYYY-MM-DD`` as that UTC day's start (or, for an end, the next day's start)
    and anything else as an ISO 8601 time; a time without offset is UTC."""

    def parse(value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            if len(value) == 10:
                start = datetime.combine(date.fromisoformat(value), time.min, tzinfo=UTC)
                return start + timedelta(days=1) if end else start
            at = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a date (YYYY-MM-DD) or an ISO 8601 time") from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    return BeforeValidator(parse)


class ExportQuery(_Model):
    """Filters of the CSV export and the admin overview (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tenant: Ident | None = None
    model: ModelName | None = None
    phase: Slug | None = None
    from_: Annotated[datetime | None, _bound(False)] = Field(default=None, alias="from")
    to: Annotated[datetime | None, _bound(True)] = None

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """Return [from, to) as times: a bare date ``to`` includes that whole day."""
        return self.from_, self.to


class OverviewQuery(_Model):
    """``GET /admin`` filters."""

    tenant: Ident | None = None
    model: ModelName | None = None
    phase: Slug | None = None
