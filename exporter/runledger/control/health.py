"""Liveness and readiness probes (unauthenticated, reveal nothing)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from runledger.control._auth import public

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz() -> Response:
    """Answer while the process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@public
def readyz() -> tuple[Response, int]:
    """Answer 200 when the ledger database is reachable, else 503."""
    if current_app.extensions["runledger.db"].ping():
        return jsonify({"status": "ready"}), 200
    return jsonify({"status": "database unavailable"}), 503
