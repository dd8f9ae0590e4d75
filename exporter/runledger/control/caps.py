"""Caps API: budget leases, a tenant's daily cap, and audited cap raises.

Agents reserve and settle spend through leases (``/v1/caps/leases``); owners and agents see
only their own tenant; admins and finance raise caps, each raise audited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, current_app

from runledger.control._auth import current_principal, require
from runledger.control._batch import json_body, json_response
from runledger.control._errors import ApiError
from runledger.cost.store import (
    DEFAULT_LEASE_TTL_S,
    TEMPORARY_RAISE_HOURS,
    CapStore,
    LeaseState,
    blocked_message,
)

__all__ = ["bp"]

bp = Blueprint("caps", __name__, url_prefix="/v1/caps")

MAX_LEASE_TTL_S = 6 * 3600.0
"""Longest lease lifetime a client may ask for; dead workers' leases come back within it."""

_STATUS_CODES = {
    "granted": 200, "settled": 200, "closed": 200,
    "blocked": 402, "contended": 409, "rollover": 409, "paused": 423,
    "expired": 410, "unknown": 404, "invalid": 400,
}  # fmt: skip


def _store() -> CapStore:
    store = current_app.extensions.get("runledger.caps")
    if store is None:
        store = CapStore(
            current_app.extensions["runledger.db"], clock=current_app.config.get("CLOCK")
        )
        current_app.extensions["runledger.caps"] = store
    return store


_json = json_response


def _body() -> dict[str, Any]:
    data = json_body(empty={})
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def _usd(data: dict[str, Any], key: str, *, default: Decimal | None = None) -> Decimal:
    value = data.get(key)
    if value is None:
        if default is None:
            raise ApiError(400, f"{key} is required (a number of dollars)")
        return default
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ApiError(400, f"{key} must be a number of dollars, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ApiError(400, f"{key} must be zero or more dollars")
    return amount


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
        body["error"] = "spent_usd is the lease's cumulative spend and cannot go down"
    elif created:
        code = 201
    return _json(body, code)


def _ttl(data: dict[str, Any]) -> float:
    raw = data.get("ttl_s", DEFAULT_LEASE_TTL_S)
    try:
        ttl = float(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"ttl_s must be a number of seconds, not {raw!r}") from None
    if not 1.0 <= ttl <= MAX_LEASE_TTL_S:
        raise ApiError(400, f"ttl_s must be between 1 and {MAX_LEASE_TTL_S:.0f} seconds")
    return ttl


# -- leases -------------------------------------------------------------------------------------


@bp.post("/leases")
@require("agent", "admin")
def open_lease() -> Response:
    """Reserve a chunk of the tenant's daily cap for a run to draw from."""
    data = _body()
    tenant_id = data.get("tenant_id")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ApiError(400, "tenant_id is required")
    _check_tenant(tenant_id)
    holder = data.get("holder")
    if not isinstance(holder, str) or not holder or len(holder) > 200:
        raise ApiError(400, "holder is required: the run id holding the lease (1-200 chars)")
    role = data.get("role")
    if role is not None and not isinstance(role, str):
        raise ApiError(400, "role must be a string")
    least = _usd(data, "min_usd")
    want = max(_usd(data, "want_usd", default=least), least)
    state = _store().open_lease(
        tenant_id, want_usd=want, min_usd=least, holder=holder, role=role, ttl_s=_ttl(data)
    )
    return _lease_answer(state, least, created=True)


@bp.post("/leases/<lease_id>/sync")
@require("agent", "admin")
def sync_lease(lease_id: str) -> Response:
    """Settle a lease's cumulative spend, renew it, and optionally top it up."""
    data = _body()
    least = _usd(data, "min_usd", default=Decimal(0))
    want = max(_usd(data, "want_usd", default=Decimal(0)), least)
    keep = _usd(data, "keep_usd") if data.get("keep_usd") is not None else None
    state = _store().sync_lease(
        lease_id, spent_usd=_usd(data, "spent_usd"), want_usd=want, min_usd=least,
        ttl_s=_ttl(data), tenant_id=_agent_tenant(), keep_usd=keep,
    )  # fmt: skip
    return _lease_answer(state, least)


@bp.post("/leases/<lease_id>/close")
@require("agent", "admin")
def close_lease(lease_id: str) -> Response:
    """Settle a lease's cumulative spend and give back what it still holds."""
    data = _body()
    state = _store().close_lease(
        lease_id, spent_usd=_usd(data, "spent_usd"), tenant_id=_agent_tenant()
    )
    return _lease_answer(state, Decimal(0))


@bp.post("/reclaim")
@require("admin")
def reclaim() -> Response:
    """Expire leases whose holders stopped renewing them."""
    return _json({"reclaimed": _store().reclaim_expired()})


# -- caps and raises ----------------------------------------------------------------------------


@bp.get("/<tenant_id>")
@require("admin", "finance", "support", "owner", "agent")
def cap_status(tenant_id: str) -> Response:
    """Show today's cap in force, spend, reservations and the 80%/100% marks."""
    _check_tenant(tenant_id)
    status = _store().status(tenant_id)
    if status is None:
        raise ApiError(404, f"unknown tenant {tenant_id!r}")
    return _json(status.as_dict())


@bp.get("/<tenant_id>/raises")
@require("admin", "finance", "support", "owner")
def list_raises(tenant_id: str) -> Response:
    """List the tenant's cap changes, newest first."""
    _check_tenant(tenant_id)
    return _json({"raises": [c.as_dict() for c in _store().changes(tenant_id)]})


@contextlib.contextmanager
def _change_errors() -> Iterator[None]:
    """Answer a cap change the store refused: unknown tenant 404, invalid change 400."""
    try:
        yield
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _reason(data: dict[str, Any]) -> str:
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "reason is required: say why the cap changes")
    if len(reason) > 500:
        raise ApiError(400, "reason must be at most 500 characters")
    return reason.strip()


@bp.post("/<tenant_id>/raises")
@require("admin", "finance")
def raise_cap(tenant_id: str) -> Response:
    """Change the daily cap, permanently or until ``expires_at``; audited."""
    data = _body()
    reason = _reason(data)
    new_cap = _usd(data, "new_cap_usd")
    expires_at = None
    if data.get("expires_at") is not None:
        try:
            expires_at = datetime.fromisoformat(str(data["expires_at"]))
        except ValueError:
            raise ApiError(400, "expires_at must be an ISO 8601 time with a UTC offset") from None
        if expires_at.tzinfo is None:
            raise ApiError(400, "expires_at must be an ISO 8601 time with a UTC offset")
    principal = current_principal()
    with _change_errors():
        change = _store().change_cap(
            tenant_id, new_cap_usd=new_cap, reason=reason, author=principal.label,
            author_role=principal.role, expires_at=expires_at,
        )  # fmt: skip
    return _json(change.as_dict(), 201)


@bp.post("/<tenant_id>/raises/temporary")
@require("admin", "finance")
def temporary_raise(tenant_id: str) -> Response:
    """One click: raise the cap for 72 hours (x1.5 unless new_cap_usd); it reverts itself."""
    data = _body()
    reason = _reason(data)
    new_cap = _usd(data, "new_cap_usd") if data.get("new_cap_usd") is not None else None
    principal = current_principal()
    with _change_errors():
        change = _store().temporary_raise(
            tenant_id, reason=reason, author=principal.label, author_role=principal.role,
            new_cap_usd=new_cap, hours=TEMPORARY_RAISE_HOURS,
        )  # fmt: skip
    return _json(change.as_dict(), 201)


@bp.post("/<tenant_id>/raises/<int:raise_id>/revert")
@require("admin", "finance")
def revert_raise(tenant_id: str, raise_id: int) -> Response:
    """End a temporary raise early; audited."""
    data = _body()
    reason = _reason(data)
    principal = current_principal()
    store = _store()
    if not any(c.raise_id == raise_id for c in store.changes(tenant_id)):
        raise ApiError(404, f"tenant {tenant_id!r} has no raise {raise_id}")
    if not store.revert_raise(
        raise_id, author=principal.label, author_role=principal.role, reason=reason
    ):
        raise ApiError(409, f"raise {raise_id} is not an active temporary raise")
    return _json({"reverted": raise_id})
