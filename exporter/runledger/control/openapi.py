"""The OpenAPI 3.1 document of every API route, built from the app's URL map.

Paths, methods, summaries (each view's docstring) and who may call them (the roles
``require`` records) come from the routes themselves; request bodies and query strings from
the pydantic models named in ``BODIES`` and ``QUERIES``. docs/openapi.json is the checked-in
copy (``runledger openapi > docs/openapi.json``); a test fails when a route is missing or
the copy is stale. Console pages (HTML) are not API routes and are left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel

from runledger import __version__
from runledger.control import _console_requests as creq
from runledger.control import _requests as req
from runledger.control._auth import ROLES_ATTR, public
from runledger.control._batch import json_response

__all__ = [
    "BODIES",
    "QUERIES",
    "NoDatabase",
    "bp",
    "build_document",
    "checked_in_path",
    "document_text",
    "is_api_endpoint",
]

bp = Blueprint("openapi", __name__)

BODIES: dict[str, type[BaseModel]] = {
    "caps.open_lease": req.LeaseOpen,
    "caps.sync_lease": req.LeaseSync,
    "caps.close_lease": req.LeaseClose,
    "caps.reclaim": req.Reclaim,
    "caps.raise_cap": req.CapRaise,
    "caps.temporary_raise": req.TemporaryRaise,
    "caps.revert_raise": req.RevertRaise,
    "actions.pause_tenant": creq.Pause,
    "actions.resume_tenant": creq.Pause,
    "actions.owner_token_visibility": creq.TokenVisibility,
    "actions.embed_link": creq.EmbedLink,
    "actions.reopen_phase": creq.Reopen,
    "actions.rerun": creq.Rerun,
    "actions.claim_rerun": creq.ClaimRerun,
    "alerts.webhook": req.AlertmanagerWebhook,
    "alerts.create_silence": req.SilenceCreate,
    "alerts.judge_alert": req.AlertOutcome,
    "alerts.put_notifications": req.TenantNotifications,
    "quality.unfreeze": req.Unfreeze,
}
"""Request body model of each endpoint that reads one with ``parse_body``."""

QUERIES: dict[str, type[BaseModel]] = {"actions.export_runs": creq.ExportQuery}

_BATCH_BODIES = {
    "api.post_events": ("events", "An event of docs/events.md"),
    "telemetry.post_prompt_audit": ("prompts", "A redacted prompt record"),
    "quality.post_artifacts": ("records", "An artifact's content (docs/quality.md)"),
}

_RAW_BODIES: dict[str, dict[str, Any]] = {
    # OTLP/HTTP (docs/otlp.md): an ExportTraceServiceRequest, protobuf or its JSON mapping,
    # optionally gzip-encoded (Content-Encoding: gzip).
    "otlp.post_traces": {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {
                "type": "object", "required": ["resourceSpans"],
                "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
            }},
        },
    },
}  # fmt: skip

_PROM_PARAMS = {
    "promproxy.query": ["query", "time"],
    "promproxy.query_range": ["query", "start", "end", "step"],
    "promproxy.series": ["match[]", "start", "end"],
    "promproxy.labels": ["match[]", "start", "end"],
    "promproxy.label_values": ["match[]", "start", "end"],
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, in one sentence."},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_NOT_API_BLUEPRINTS = {"console"}


def is_api_endpoint(endpoint: str) -> bool:
    """Return True for JSON/CSV API endpoints (not console pages or static files)."""
    return endpoint != "static" and endpoint.split(".")[0] not in _NOT_API_BLUEPRINTS


def _path(rule: str) -> tuple[str, list[str]]:
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule)
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule), names


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")


def build_document(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI document of ``app``'s API routes."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {"Error": _ERROR}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if not is_api_endpoint(rule.endpoint):
            continue
        view = app.view_functions[rule.endpoint]
        roles = getattr(view, ROLES_ATTR, None)
        path, names = _path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}_{method.lower()}",
                "summary": doc,
                "parameters": [_path_param(n, rule.rule) for n in names],
                "responses": {
                    "200": {"description": "Success."},
                    "400": _err("The request is invalid; the body names each field."),
                    "404": _err("No such resource."),
                },
            }
            if roles:
                op["security"] = [{"bearer": []}]
                op["x-roles"] = list(roles)
                op["responses"]["401"] = _err("Missing, unknown or revoked token.")
                op["responses"]["403"] = _err("This role or tenant may not do this.")
            model = BODIES.get(rule.endpoint)
            if model is not None and method in ("POST", "PUT", "PATCH"):
                schema = _schema(model)
                for name, sub in schema.pop("$defs", {}).items():
                    components[name] = sub
                components[model.__name__] = schema
                op["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
                }  # fmt: skip
            if rule.endpoint in _RAW_BODIES:
                op["requestBody"] = _RAW_BODIES[rule.endpoint]
            batch = _BATCH_BODIES.get(rule.endpoint)
            if batch is not None:
                key, what = batch
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": [key],
                        "properties": {key: {"type": "array", "minItems": 1,
                                             "items": {"type": "object", "description": what}}},
                    }}},
                }  # fmt: skip
            query = QUERIES.get(rule.endpoint)
            if query is not None:
                props = _schema(query).get("properties", {})
                op["parameters"] += [
                    {"name": name, "in": "query", "required": False, "schema": sub}
                    for name, sub in props.items()
                ]
            for name in _PROM_PARAMS.get(rule.endpoint, []):
                op["parameters"].append(
                    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                )
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runledger control service",
            "version": __version__,
            "description": "Ingest, caps, quick actions, CSV export and the tenant-enforcing"
            " Prometheus query proxy. Every 4xx answers {error, fields}.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_param(name: str, rule: str) -> dict[str, Any]:
    integer = f"<int:{name}>" in rule
    schema = {"type": "integer", "minimum": 0} if integer else {"type": "string", "minLength": 1}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def checked_in_path() -> Path:
    """Return the checked-in copy's path (shipped beside this module)."""
    return Path(__file__).with_name("openapi.json")


def document_text(app: Flask) -> str:
    """Return ``app``'s document as the checked-in copy holds it."""
    return json.dumps(build_document(app), indent=2, sort_keys=True) + "\n"


class NoDatabase:
    """Stands in for the ledger when an app is built only to read its URL map."""


@bp.get("/openapi.json")
@public
def openapi_json() -> Response:
    """The OpenAPI document of this service."""
    return json_response(build_document(current_app))
