"""Caps API: budget leases, a tenant's daily cap, and audited cap raises.

Agents reserve and settle spend through leases (``/v1/caps/leases``); owners and agents see
only their own tenant; admins and finance raise caps, each raise audited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TypeVar

from flask import Blueprint, Response, current_app

from runledger.control import alerts
from runledger.control._auth import current_principal, require
from runledger.control._batch import json_response, parse_body
from runledger.control._errors import ApiError
from runledger.control._requests import (
    CapRaise,
    LeaseClose,
    LeaseOpen,
    LeaseSync,
    Reclaim,
    RevertRaise,
    TemporaryRaise,
)
from runledger.store import CapAdmin, Database, LeaseState, LeaseStore
from runledger.store.cap_admin import TEMPORARY_RAISE_HOURS, blocked_message
from runledger.store.leases import SpendOverflow
from runledger.validation import FieldError

__all__ = ["bp"]

bp = Blueprint("caps", __name__, url_prefix="/v1/caps")

_STATUS_CODES = {
    "granted": 200, "settled": 200, "closed": 200,
    "blocked": 402, "contended": 409, "rollover": 409, "paused": 423,
    "expired": 410, "unknown": 404, "invalid": 400,
}  # fmt: skip

S = TypeVar("S", LeaseStore, CapAdmin)


def _service(kind: Callable[..., S]) -> S:
    """Return the app's lease store or cap admin, made once on the app's database and clock."""
    key = f"runledger.{kind.__name__}"
    service: S | None = current_app.extensions.get(key)
    if service is None:
        db: Database = current_app.extensions["runledger.db"]
        service = kind(db, clock=current_app.config.get("CLOCK"))
        current_app.extensions[key] = service
    return service


def _check_tenant(tenant_id: str) -> None:
    principal = current_principal()
    if principal.tenant_id is not None and principal.tenant_id != tenant_id:
        raise ApiError(403, f"this token may act only for tenant {principal.tenant_id!r}")


def _agent_tenant() -> str | None:
    principal = current_principal()
    return principal.tenant_id if principal.role == "agent" else None


def _lease_answer(state: LeaseState, needed: Decimal, created: bool = False) -> Response:
    body = state.as_dict()
    code = _STATUS_CODES.get(state.status, 500)
    if state.status == "blocked" and state.tenant_id:
        # The owner hears of it now, not a scrape and an alert rule later.
        alerts.cap_blocked(
            state.tenant_id, cap_usd=state.cap_usd, spend_usd=state.spend_usd, needed_usd=needed
        )
    if state.status == "blocked":
        body["error"] = blocked_message(
            state.tenant_id or "", cap_usd=state.cap_usd, spend_usd=state.spend_usd,
            needed_usd=needed,
        )  # fmt: skip
    elif state.status == "contended":
        body["error"] = (
            f"room is left under tenant {state.tenant_id!r}'s daily cap but other leases hold "
            "it; retry shortly"
        )
        body["retry_after_s"] = 0.05
    elif state.status == "rollover":
        body["error"] = "this lease's UTC day is over: close it and open a new lease"
    elif state.status == "paused":
        body["error"] = f"tenant {state.tenant_id!r} is paused by an admin: no new spend"
    elif state.status == "expired":
        body["error"] = (
            "lease expired and was reclaimed; its spend is taken from the ledger events: "
            "open a new lease"
        )
    elif state.status == "unknown":
        body["error"] = "no such lease or tenant"
    elif state.status == "invalid":
        problem = FieldError("spent_usd", "is the lease's cumulative spend and cannot go down")
        body.update(ApiError(400, f"{problem.field} {problem.message}", fields=[problem]).body())
    elif created:
        code = 201
    return json_response(body, code)


# -- leases -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _spend_errors() -> Iterator[None]:
    """Answer a reported spend the ledger cannot hold as a 400 naming ``spent_usd``."""
    try:
        yield
    except SpendOverflow as exc:
        problem = FieldError("spent_usd", str(exc))
        raise ApiError(400, f"{problem.field} {problem.message}", fields=[problem]) from None


@bp.post("/leases")
@require("agent", "admin")
def open_lease() -> Response:
    """Reserve a chunk of the tenant's daily cap for a run to draw from."""
    req = parse_body(LeaseOpen)
    _check_tenant(req.tenant_id)
    state = _service(LeaseStore).open_lease(
        req.tenant_id, want_usd=req.want, min_usd=req.min_usd, holder=req.holder,
        role=req.role, ttl_s=req.ttl_s,
    )  # fmt: skip
    return _lease_answer(state, req.min_usd, created=True)


@bp.post("/leases/<lease_id>/sync")
@require("agent", "admin")
def sync_lease(lease_id: str) -> Response:
    """Settle a lease's cumulative spend, renew it, and optionally top it up."""
    req = parse_body(LeaseSync)
    with _spend_errors():
        state = _service(LeaseStore).sync_lease(
            lease_id, spent_usd=req.spent_usd, want_usd=req.want, min_usd=req.min_usd,
            ttl_s=req.ttl_s, tenant_id=_agent_tenant(), keep_usd=req.keep_usd,
        )  # fmt: skip
    return _lease_answer(state, req.min_usd)


@bp.post("/leases/<lease_id>/close")
@require("agent", "admin")
def close_lease(lease_id: str) -> Response:
    """Settle a lease's cumulative spend and give back what it still holds."""
    req = parse_body(LeaseClose)
    with _spend_errors():
        state = _service(LeaseStore).close_lease(
            lease_id, spent_usd=req.spent_usd, tenant_id=_agent_tenant()
        )
    return _lease_answer(state, Decimal(0))


@bp.post("/reclaim")
@require("admin")
def reclaim() -> Response:
    """Expire unrenewed leases and release those whose grace is over."""
    parse_body(Reclaim)
    return json_response({"reclaimed": _service(LeaseStore).reclaim_expired()})


# -- caps and raises ----------------------------------------------------------------------------


@bp.get("/<tenant_id>")
@require("admin", "finance", "support", "owner", "agent")
def cap_status(tenant_id: str) -> Response:
    """Show today's cap in force, spend, reservations and the 80%/100% marks."""
    _check_tenant(tenant_id)
    status = _service(CapAdmin).status(tenant_id)
    if status is None:
        raise ApiError(404, f"unknown tenant {tenant_id!r}")
    return json_response(status.as_dict())


@bp.get("/<tenant_id>/raises")
@require("admin", "finance", "support", "owner")
def list_raises(tenant_id: str) -> Response:
    """List the tenant's cap changes, newest first."""
    _check_tenant(tenant_id)
    return json_response({"raises": [c.as_dict() for c in _service(CapAdmin).changes(tenant_id)]})


@contextlib.contextmanager
def _change_errors() -> Iterator[None]:
    """Answer a cap change the store refused: unknown tenant 404, invalid change 400."""
    try:
        yield
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@bp.post("/<tenant_id>/raises")
@require("admin", "finance")
def raise_cap(tenant_id: str) -> Response:
    """Change the daily cap, permanently or until ``expires_at``; audited."""
    req = parse_body(CapRaise)
    principal = current_principal()
    with _change_errors():
        change = _service(CapAdmin).change_cap(
            tenant_id, new_cap_usd=req.new_cap_usd, reason=req.reason, author=principal.label,
            author_role=principal.role, expires_at=req.expires_at,
        )  # fmt: skip
    if change.new_value_usd > change.old_value_usd:
        alerts.cap_unblocked(tenant_id)
    return json_response(change.as_dict(), 201)


@bp.post("/<tenant_id>/raises/temporary")
@require("admin", "finance")
def temporary_raise(tenant_id: str) -> Response:
    """One click: raise the cap for 72 hours (x1.5 unless new_cap_usd); it reverts itself."""
    req = parse_body(TemporaryRaise)
    principal = current_principal()
    with _change_errors():
        change = _service(CapAdmin).temporary_raise(
            tenant_id, reason=req.reason, author=principal.label, author_role=principal.role,
            new_cap_usd=req.new_cap_usd, hours=TEMPORARY_RAISE_HOURS,
        )  # fmt: skip
    if change.new_value_usd > change.old_value_usd:
        alerts.cap_unblocked(tenant_id)
    return json_response(change.as_dict(), 201)


@bp.post("/<tenant_id>/raises/<int:raise_id>/revert")
@require("admin", "finance")
def revert_raise(tenant_id: str, raise_id: int) -> Response:
    """End a temporary raise early; audited."""
    req = parse_body(RevertRaise)
    principal = current_principal()
    admin = _service(CapAdmin)
    if not any(c.raise_id == raise_id for c in admin.changes(tenant_id)):
        raise ApiError(404, f"tenant {tenant_id!r} has no raise {raise_id}")
    if not admin.revert_raise(
        raise_id, author=principal.label, author_role=principal.role, reason=req.reason
    ):
        raise ApiError(409, f"raise {raise_id} is not an active temporary raise")
    return json_response({"reverted": raise_id})
