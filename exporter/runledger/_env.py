"""Every environment variable runledger reads, in one place."""

DATABASE_URL = "RUNLEDGER_DATABASE_URL"
"""PostgreSQL connection URI; when unset an embedded server is started under RUNLEDGER_HOME."""

HOME = "RUNLEDGER_HOME"
"""State directory (embedded PostgreSQL data, pid files, spools). Default: ./.runledger"""

RETENTION_DAYS = "RUNLEDGER_RETENTION_DAYS"
"""Days of raw events, spans and prompt audit kept (14-30, default 30)."""

CONTROL_BIND = "RUNLEDGER_CONTROL_BIND"
"""host:port the control service listens on (default 127.0.0.1:8480)."""

POOL_MAX = "RUNLEDGER_POOL_MAX"
"""Maximum PostgreSQL connections per control-service process (default 10)."""

URL = "RUNLEDGER_URL"
"""Base URL of the control service, for the SDK and CLI clients."""

TOKEN = "RUNLEDGER_TOKEN"
"""Bearer token for the SDK and CLI clients."""
