"""Quick-action APIs: pause/resume a tenant, reopen a phase, rerun a step, the rerun
requests Coordinators claim, owners' token visibility, embed links, and the CSV export.

Each action is audited with who, what, why and before/after (store/console_actions.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, request, stream_with_context, url_for
from pydantic import BaseModel, ValidationError

from runledger.control import _embed
from runledger.control._auth import current_principal, require
from runledger.control._batch import json_response, parse_body
from runledger.control._console_requests import (
    ClaimRerun,
    EmbedLink,
    ExportQuery,
    Pause,
    Reopen,
    Rerun,
    TokenVisibility,
)
from runledger.control._errors import ApiError, invalid_request
from runledger.control._stores import app_store
from runledger.store.console import Console, Filters
from runledger.store.console_actions import Actor, ConsoleActions, NotFound, Refused
from runledger.store.tokens import Principal

__all__ = ["bp", "console_store", "csv_response", "export_filters", "parse_args"]

bp = Blueprint("actions", __name__, url_prefix="/v1")

M = TypeVar("M", bound=BaseModel)


def actions() -> ConsoleActions:
    return app_store("runledger.actions", ConsoleActions)


def console_store() -> Console:
    return app_store(
        "runledger.console", lambda db: Console(db, clock=current_app.config.get("CLOCK"))
    )


def parse_args(model: type[M], values: Any = None) -> M:
    """Validate query-string (or form) values as ``model``; blank values count as absent."""
    source = request.args if values is None else values
    data = {k: v for k, v in source.items() if v != "" and k != "csrf_token"}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from None


@contextlib.contextmanager
def action_errors() -> Iterator[None]:
    """Answer an unknown target 404 and a refused action 409, naming the problem."""
    try:
        yield
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except Refused as exc:
        raise ApiError(409, str(exc)) from None


def _actor() -> Actor:
    principal = current_principal()
    return Actor(principal.label, principal.role)


def _own_tenant(tenant_id: str) -> None:
    principal = current_principal()
    if principal.tenant_id is not None and principal.tenant_id != tenant_id:
        raise ApiError(403, f"this token may act only for tenant {principal.tenant_id!r}")


# -- tenants --------------------------------------------------------------------------------


@bp.post("/tenants/<tenant_id>/pause")
@require("admin")
def pause_tenant(tenant_id: str) -> Response:
    """Pause a tenant: its new runs are refused, runs in flight finish; audited."""
    return _set_paused(tenant_id, paused=True)


@bp.post("/tenants/<tenant_id>/resume")
@require("admin")
def resume_tenant(tenant_id: str) -> Response:
    """Resume a paused tenant; audited."""
    return _set_paused(tenant_id, paused=False)


def _set_paused(tenant_id: str, *, paused: bool) -> Response:
    req = parse_body(Pause)
    with action_errors():
        result = actions().set_paused(tenant_id, paused=paused, reason=req.reason, actor=_actor())
    return json_response(result)


@bp.put("/tenants/<tenant_id>/owner-token-visibility")
@require("admin")
def owner_token_visibility(tenant_id: str) -> Response:
    """Switch whether the tenant's owners see raw token counts; audited."""
    req = parse_body(TokenVisibility)
    with action_errors():
        result = actions().set_owner_sees_tokens(
            tenant_id, allowed=req.allowed, reason=req.reason, actor=_actor()
        )
    return json_response(result)


@bp.post("/tenants/<tenant_id>/embed-links")
@require("admin", "owner")
def embed_link(tenant_id: str) -> Response:
    """Mint a signed, expiring link to the tenant's page, safe to embed."""
    _own_tenant(tenant_id)
    req = parse_body(EmbedLink)
    if console_store().tenant(tenant_id) is None:
        raise ApiError(404, f"unknown tenant {tenant_id!r}")
    token, expires = _embed.mint(tenant_id, req.ttl_minutes * 60)
    url = url_for("console.embed", signed=token, _external=True)
    return json_response(
        {"url": url, "tenant_id": tenant_id, "expires_at": expires.isoformat()}, 201
    )


# -- projects and runs ----------------------------------------------------------------------


@bp.post("/projects/<project_id>/reopen")
@require("admin", "support")
def reopen_phase(project_id: str) -> Response:
    """Put a project back into one of its earlier phases; audited."""
    req = parse_body(Reopen)
    with action_errors():
        result = actions().reopen_phase(
            project_id, phase=req.phase, reason=req.reason, actor=_actor(),
            tenant_id=None,
        )  # fmt: skip
    return json_response(result)


@bp.post("/runs/<run_id>/rerun")
@require("admin", "support")
def rerun(run_id: str) -> Response:
    """Ask the tenant's Coordinator to run this run's step again; audited."""
    req = parse_body(Rerun)
    with action_errors():
        result = actions().request_rerun(run_id, reason=req.reason, actor=_actor(), tenant_id=None)
    return json_response(result, 201 if result["created"] else 200)


@bp.get("/tenants/<tenant_id>/reruns")
@require("admin", "agent")
def pending_reruns(tenant_id: str) -> Response:
    """List the tenant's pending rerun requests, oldest first."""
    _own_tenant(tenant_id)
    return json_response({"reruns": actions().pending_reruns(tenant_id)})


@bp.post("/tenants/<tenant_id>/reruns/claim")
@require("admin", "agent")
def claim_rerun(tenant_id: str) -> Response:
    """Claim the oldest pending rerun of the tenant (204 when none waits)."""
    _own_tenant(tenant_id)
    req = parse_body(ClaimRerun)
    claimed = actions().claim_rerun(tenant_id, holder=req.holder, actor=_actor())
    if claimed is None:
        return Response(status=204)
    return json_response(claimed)


# -- CSV export -----------------------------------------------------------------------------


def export_filters(query: ExportQuery, principal: Principal) -> Filters:
    """Return the export's filters with an owner's tenant forced (another is refused)."""
    tenant = query.tenant
    if principal.tenant_id is not None:
        if tenant is not None and tenant != principal.tenant_id:
            raise ApiError(403, f"this token may export only tenant {principal.tenant_id!r}")
        tenant = principal.tenant_id
    start, end = query.bounds()
    if start and end and start >= end:
        raise ApiError(400, "from must be before to", fields=[])
    return Filters(tenant=tenant, model=query.model, phase=query.phase, start=start, end=end)


def csv_response(filters: Filters, principal: Principal) -> Response:
    """Stream the filtered runs as CSV: token columns blank for an owner unless its tenant
    allows them, artifact columns blank for finance (never artifacts)."""
    chunks = console_store().export_csv(
        filters, tokens=owner_sees_tokens(principal), artifacts=principal.role != "finance"
    )
    resp = Response(stream_with_context(chunks), mimetype="text/csv")
    resp.headers["Content-Disposition"] = 'attachment; filename="runledger-runs.csv"'
    return resp


def owner_sees_tokens(principal: Principal) -> bool:
    if principal.role != "owner" or principal.tenant_id is None:
        return True
    tenant = console_store().tenant(principal.tenant_id)
    return bool(tenant and tenant["owner_sees_tokens"])


@bp.get("/export/runs.csv")
@require("admin", "support", "finance", "owner")
def export_runs() -> Response:
    """Stream runs and their costs as CSV, filtered by tenant, model, phase and dates."""
    principal = current_principal()
    filters = export_filters(parse_args(ExportQuery), principal)
    return csv_response(filters, principal)
