"""JSON errors that name the problem."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from runledger.store import DatabaseUnavailable

__all__ = ["ApiError", "register_error_handlers"]


class ApiError(Exception):
    """An error answered as ``{"error": message, ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def register_error_handlers(app: Flask) -> None:
    """Answer every error as JSON."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify({"error": exc.message, **exc.extra}), exc.status

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
        return jsonify({"error": messages.get(code, exc.description or exc.name)}), code
