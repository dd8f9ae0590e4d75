"""A read-only Prometheus query proxy that enforces an owner's tenant on every selector.

The query is parsed (``promql-parser``), never pattern-matched: every vector selector,
including those inside subqueries, functions and both sides of ``or``/``unless``, gets the
matcher ``tenant="<owner's tenant>"``. A selector that already names the tenant label any
other way (another tenant, ``=~``, ``!=``, ``!~``) is refused rather than rewritten, as
prom-label-proxy does with its error-on-replace option; so is a ``label_replace`` or
``label_join`` that writes the tenant label. Staff tokens query unscoped. docs/security.md
explains the model.
"""

from __future__ import annotations

import os
from typing import Any

import promql_parser as pp
import requests
from flask import Blueprint, Response, request

from runledger import _env
from runledger.control._auth import current_principal, require
from runledger.control._errors import ApiError
from runledger.validation import FieldError

__all__ = ["TENANT_LABEL", "QueryRefused", "bp", "enforce", "enforce_selector"]

bp = Blueprint("promproxy", __name__, url_prefix="/prom/api/v1")

TENANT_LABEL = "tenant"
TIMEOUT_S = 30.0
MAX_QUERY_CHARS = 16_384

_FORWARD = {
    "query": ("query", "time", "timeout", "limit"),
    "query_range": ("query", "start", "end", "step", "timeout", "limit"),
    "series": ("start", "end", "limit"),
    "labels": ("start", "end", "limit"),
    "values": ("start", "end", "limit"),
}


class QueryRefused(ValueError):
    """The query would read beyond the caller's tenant (403), or is not PromQL (400)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def _check_matchers(matchers: list[pp.Matcher], tenant: str) -> bool:
    """Return True when the tenant matcher is already exactly ours; refuse any other."""
    ours = False
    for m in matchers:
        if m.name != TENANT_LABEL:
            continue
        if m.op == pp.MatchOp.Equal and m.value == tenant:
            ours = True
            continue
        raise QueryRefused(
            f"the selector's {m} matcher would read beyond tenant {tenant!r}: drop it, the"
            f' proxy adds {TENANT_LABEL}="{tenant}" to every selector'
        )
    return ours


def _scope(sel: pp.VectorSelector, tenant: str) -> None:
    if sel.matchers.or_matchers:
        raise QueryRefused("selectors with 'or' between matchers are not supported here")
    matchers = list(sel.matchers.matchers)
    if not _check_matchers(matchers, tenant):
        matchers.append(pp.Matcher(pp.MatchOp.Equal, TENANT_LABEL, tenant))
        sel.matchers = pp.Matchers(matchers)


_LABEL_WRITERS = {"label_replace": 1, "label_join": 1}


def _rewrite(node: Any, tenant: str) -> None:
    """Scope every selector under ``node`` in place (child attributes share the tree)."""
    if isinstance(node, pp.VectorSelector):
        _scope(node, tenant)
        return
    if isinstance(node, pp.MatrixSelector):
        _scope(node.vector_selector, tenant)
        return
    if isinstance(node, pp.Call):
        if node.func.name in _LABEL_WRITERS:
            dst = node.args[_LABEL_WRITERS[node.func.name]]
            if isinstance(dst, pp.StringLiteral) and dst.val == TENANT_LABEL:
                raise QueryRefused(f"{node.func.name} may not write the {TENANT_LABEL} label")
        for arg in node.args:
            _rewrite(arg, tenant)
        return
    for attr in ("lhs", "rhs", "expr", "param"):
        child = getattr(node, attr, None)
        if isinstance(child, pp.Expr):
            _rewrite(child, tenant)


def _verify(query: str, tenant: str) -> None:
    """Parse the rewritten query again and refuse it unless every selector is ours."""
    wanted = f'{TENANT_LABEL}="{tenant}"'
    problems: list[str] = []

    def check(node: Any) -> None:
        sel = node.vector_selector if isinstance(node, pp.MatrixSelector) else node
        if isinstance(sel, pp.VectorSelector):
            tenants = [str(m) for m in sel.matchers.matchers if m.name == TENANT_LABEL]
            if tenants != [wanted] or sel.matchers.or_matchers:
                problems.append(str(sel))

    try:
        reparsed = pp.parse(query)
    except Exception:  # the parser's printer does not escape quotes inside label values
        raise QueryRefused(
            "the query could not be scoped safely (quotes inside a label value?)"
        ) from None
    pp.walk(reparsed, pre_visit=check)
    if problems:
        raise QueryRefused(f"could not scope {problems[0]} to tenant {tenant!r}")


def enforce(query: str, tenant: str) -> str:
    """Return ``query`` with every selector scoped to ``tenant``; QueryRefused otherwise."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryRefused(f"query longer than {MAX_QUERY_CHARS} characters", 400)
    try:
        expr = pp.parse(query)
    except Exception as exc:  # the parser raises a plain ValueError-like error
        raise QueryRefused(f"query does not parse: {exc}", 400) from None
    _rewrite(expr, tenant)
    scoped = str(expr)
    _verify(scoped, tenant)
    return scoped


def enforce_selector(selector: str, tenant: str) -> str:
    """Return a series selector (``match[]``) scoped to ``tenant``."""
    scoped = enforce(selector, tenant)
    expr = pp.parse(scoped)
    if not isinstance(expr, pp.VectorSelector):
        raise QueryRefused('match[] must be a series selector such as up{job="x"}', 400)
    return scoped


def _tenant_scope() -> str | None:
    principal = current_principal()
    return principal.tenant_id if principal.role == "owner" else None


def _forward(path: str, params: list[tuple[str, str]]) -> Response:
    base = os.environ.get(_env.PROMETHEUS_URL)
    if not base:
        raise ApiError(503, f"no Prometheus configured: set {_env.PROMETHEUS_URL}")
    try:
        upstream = requests.post(
            f"{base.rstrip('/')}/api/v1/{path}", data=params, timeout=TIMEOUT_S
        )
    except requests.RequestException as exc:
        raise ApiError(502, f"Prometheus did not answer: {type(exc).__name__}") from None
    return Response(
        upstream.content, status=upstream.status_code,
        mimetype=upstream.headers.get("Content-Type", "application/json").split(";")[0],
    )  # fmt: skip


def _params(kind: str) -> list[tuple[str, str]]:
    return [(k, v) for k in _FORWARD[kind] for v in request.values.getlist(k)][:20]


def _refused(exc: QueryRefused, field: str) -> ApiError:
    problem = FieldError(field, str(exc))
    return ApiError(exc.status, f"{field}: {exc}", fields=[problem])


def _query_param(kind: str) -> list[tuple[str, str]]:
    query = request.values.get("query")
    if not query:
        problem = FieldError("query", "is required")
        raise ApiError(400, "query is required", fields=[problem])
    tenant = _tenant_scope()
    params = [(k, v) for k, v in _params(kind) if k != "query"]
    if tenant is not None:
        try:
            query = enforce(query, tenant)
        except QueryRefused as exc:
            raise _refused(exc, "query") from None
    return [("query", query), *params]


def _matches(required: bool) -> list[tuple[str, str]]:
    selectors = request.values.getlist("match[]")[:20]
    tenant = _tenant_scope()
    if tenant is None:
        if required and not selectors:
            raise ApiError(
                400, "match[] is required", fields=[FieldError("match[]", "is required")]
            )
        return [("match[]", s) for s in selectors]
    if not selectors:
        selectors = [f'{{{TENANT_LABEL}="{tenant}"}}']
    out = []
    for s in selectors:
        try:
            out.append(("match[]", enforce_selector(s, tenant)))
        except QueryRefused as exc:
            raise _refused(exc, "match[]") from None
    return out


_ROLES = ("admin", "support", "finance", "owner")


@bp.route("/query", methods=["GET", "POST"])
@require(*_ROLES)
def query() -> Response:
    """Instant query; an owner's query is scoped to its tenant."""
    return _forward("query", _query_param("query"))


@bp.route("/query_range", methods=["GET", "POST"])
@require(*_ROLES)
def query_range() -> Response:
    """Range query; an owner's query is scoped to its tenant."""
    return _forward("query_range", _query_param("query_range"))


@bp.route("/series", methods=["GET", "POST"])
@require(*_ROLES)
def series() -> Response:
    """Series matching match[]; an owner's selectors are scoped to its tenant."""
    return _forward("series", _matches(required=True) + _params("series"))


@bp.route("/labels", methods=["GET", "POST"])
@require(*_ROLES)
def labels() -> Response:
    """Label names; an owner sees only those of its tenant's series."""
    return _forward("labels", _matches(required=False) + _params("labels"))


@bp.get("/label/<name>/values")
@require(*_ROLES)
def label_values(name: str) -> Response:
    """Values of one label; an owner sees only those of its tenant's series."""
    if not name.replace("_", "a").isalnum() or len(name) > 128:
        raise ApiError(400, "label name must be letters, digits and _",
                       fields=[FieldError("name", "is not a label name")])  # fmt: skip
    base = os.environ.get(_env.PROMETHEUS_URL)
    if not base:
        raise ApiError(503, f"no Prometheus configured: set {_env.PROMETHEUS_URL}")
    params = _matches(required=False) + _params("values")
    try:
        upstream = requests.get(
            f"{base.rstrip('/')}/api/v1/label/{name}/values", params=params, timeout=TIMEOUT_S
        )
    except requests.RequestException as exc:
        raise ApiError(502, f"Prometheus did not answer: {type(exc).__name__}") from None
    return Response(upstream.content, status=upstream.status_code, mimetype="application/json")
