"""JSON errors that name the problem: ``{"error": sentence, "fields": [...]}`` for every 4xx.

Every error is JSON: an unexpected exception is logged with its traceback and answered as a
JSON 500, never as an HTML page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from runledger.store import DatabaseUnavailable
from runledger.validation import FieldError, describe, field_errors

__all__ = ["INTERNAL_ERROR", "ApiError", "invalid_request", "register_error_handlers"]

INTERNAL_ERROR = (
    "internal error: the request failed on the server and was logged; retry it, and report it"
    " if it fails again"
)
"""The body's ``error`` for an unexpected exception (a bug; the traceback is logged)."""


class ApiError(Exception):
    """An error answered as ``{"error": message, "fields": [...]}`` with an HTTP status.

    ``fields`` (the field-level problems, when there are any) become the body's
    ``[{"field", "message"}]`` list.
    """

    def __init__(self, status: int, message: str, *, fields: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = list(fields)

    def body(self) -> dict[str, Any]:
        """Return the JSON body every 4xx of every JSON API uses."""
        body: dict[str, Any] = {"error": self.message}
        if self.fields:
            body["fields"] = [f.as_dict() for f in self.fields]
        return body


def invalid_request(exc: ValidationError, *, prefix: str = "") -> ApiError:
    """Return the 400 for a request body that failed its model, naming every field."""
    fields = field_errors(exc, prefix=prefix)
    return ApiError(400, f"invalid request: {describe(fields)}", fields=fields)


def register_error_handlers(app: Flask) -> None:
    """Answer every error as JSON, and refuse URL values the ledger could not store."""

    @app.url_value_preprocessor
    def _storable_path(endpoint: str | None, values: dict[str, Any] | None) -> None:
        for name, value in (values or {}).items():
            if isinstance(value, str) and "\x00" in value:
                problem = FieldError(name, "must not contain NUL characters")
                raise ApiError(400, f"{name} in the URL {problem.message}", fields=[problem])

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify(exc.body()), exc.status

    @app.errorhandler(DatabaseUnavailable)
    def _db_down(exc: DatabaseUnavailable) -> tuple[Response, int, dict[str, str]]:
        app.logger.warning("database unavailable: %s", exc)
        body = {"error": "ledger database unavailable; nothing was stored, retry the request"}
        return jsonify(body), 503, {"Retry-After": "5"}

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        messages = {
            413: f"request body too large; the limit is {app.config['MAX_CONTENT_LENGTH']} bytes",
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
        }
        code = exc.code or 500
        return jsonify(ApiError(code, messages.get(code, exc.description or exc.name)).body()), code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        app.logger.error(
            "unexpected error answering %s %s", request.method, request.path, exc_info=exc
        )
        return jsonify({"error": INTERNAL_ERROR}), 500
