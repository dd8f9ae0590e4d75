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

SPOOL_PATH = "RUNLEDGER_SPOOL_PATH"
"""SDK spool file (SQLite). Default: $RUNLEDGER_HOME/spool/events.db"""

SPOOL_MAX_EVENTS = "RUNLEDGER_SPOOL_MAX_EVENTS"
"""Records the SDK spool may hold before emit applies back-pressure (default 100000)."""

SPOOL_FULL_TIMEOUT = "RUNLEDGER_SPOOL_FULL_TIMEOUT"
"""Seconds emit waits on a full spool before raising SpoolFullError (default 10)."""

TRACES_PER_SECOND = "RUNLEDGER_TRACES_PER_SECOND"
"""New run traces sampled per second by the SDK's rate-limited sampler (default 10)."""

PROMPT_AUDIT = "RUNLEDGER_PROMPT_AUDIT"
"""1/true: the SDK stores redacted prompts and responses in prompt_audit (default off)."""

SHUTDOWN_TIMEOUT = "RUNLEDGER_SHUTDOWN_TIMEOUT"
"""Seconds the SDK spends delivering spooled events at exit (default 5)."""

TELEMETRY_SHUTDOWN_TIMEOUT = "RUNLEDGER_TELEMETRY_SHUTDOWN_TIMEOUT"
"""Seconds the SDK waits at exit for its own span and log exporters (default 2): spans not
sent by then (no collector listening) are dropped, so telemetry never holds an exit up."""

ENFORCE_CAPS = "RUNLEDGER_ENFORCE_CAPS"
"""SDK runs draw model and external spend from a tenant budget lease (default 1, on); 0 turns
that off for tenants without a cap (warned once per process, counted by
runledger_sdk_uncapped_runs_total)."""

ON_LEDGER_DOWN = "RUNLEDGER_ON_LEDGER_DOWN"
"""fail_closed (default) or fail_open: SDK spend when the ledger cannot be reached (the
Publisher always fails closed)."""

OFFLINE_ALLOWANCE_USD = "RUNLEDGER_OFFLINE_ALLOWANCE_USD"
"""Dollars a fail_open run may spend without a lease while the ledger is down (default 0)."""

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_LOGS_EXPORTER = "OTEL_LOGS_EXPORTER"
OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
"""Standard OpenTelemetry variables the SDK honours when it builds its own providers."""
