"""The control service: ingest API, caps, admin actions, alert webhook (Flask)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from runledger import _env
from runledger.control._auth import TokenCache
from runledger.control._errors import register_error_handlers
from runledger.store import Database, IngestLimits, Ingestor, resolve_database_url
from runledger.store.retention import retention_days_from_env

__all__ = ["create_app"]

DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
    "AUTH_CACHE_SECONDS": 30.0,
    "POOL_MAX": 10,
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the control-service app.

    Args:
        config: overrides; ``DATABASE`` may hold an open ``Database`` (tests),
            otherwise ``DATABASE_URL`` or the environment selects the server.
    """
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config["RETENTION_DAYS"] = retention_days_from_env()
    if os.environ.get(_env.POOL_MAX):
        app.config["POOL_MAX"] = int(os.environ[_env.POOL_MAX])
    if config:
        app.config.update(config)
    db = app.config.get("DATABASE")
    if db is None:
        url = app.config.get("DATABASE_URL") or resolve_database_url()
        db = Database(url, max_size=int(app.config["POOL_MAX"])).open()
    app.extensions["runledger.db"] = db
    app.extensions["runledger.tokens"] = TokenCache(ttl=float(app.config["AUTH_CACHE_SECONDS"]))
    app.extensions["runledger.ingestor"] = Ingestor(
        db, IngestLimits(retention_days=int(app.config["RETENTION_DAYS"]))
    )
    from runledger.control import (
        actions,
        alerts,
        api,
        caps,
        console,
        health,
        metrics,
        openapi,
        otlp,
        promproxy,
        quality,
        telemetry,
    )

    metrics.init_app(app)  # sets runledger.ingest_counts and serves /metrics
    otlp.init_app(app)  # POST /v1/traces
    register_error_handlers(app)
    modules = (health, api, caps, telemetry, quality, alerts, actions, console, promproxy, openapi)
    for module in modules:
        app.register_blueprint(module.bp)
    return app
