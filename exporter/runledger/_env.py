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

CONSOLE_URL = "RUNLEDGER_CONSOLE_URL"
"""The console's base URL as browsers reach it, for links from Grafana dashboards and alerts
(default http://localhost:8480)."""

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

QUALITY_CONFIG = "RUNLEDGER_QUALITY_CONFIG"
"""YAML file of the quality jobs: the Validator plug-in, sample sizes and freeze thresholds,
drift test settings, schedule (docs/quality.md). Unset: the defaults, and no Validator."""
ALERT_WEBHOOK_TOKEN = "RUNLEDGER_ALERT_WEBHOOK_TOKEN"
"""Shared bearer secret Alertmanager sends to POST /v1/alerts/webhook (unset: the webhook
answers 503). Alertmanager reads the same secret from a file (credentials_file)."""

ALERTMANAGER_URL = "RUNLEDGER_ALERTMANAGER_URL"
"""Base URL of Alertmanager's API (e.g. http://alertmanager:9093), for muting (silences)."""

SMTP_HOST = "RUNLEDGER_SMTP_HOST"
"""SMTP server for owner alert emails (unset: the control service sends no email)."""

SMTP_PORT = "RUNLEDGER_SMTP_PORT"
"""SMTP port (default 25)."""

SMTP_FROM = "RUNLEDGER_SMTP_FROM"
"""Sender address of alert emails (default runledger@localhost)."""

SMTP_USER = "RUNLEDGER_SMTP_USER"
"""SMTP login, when the server wants one (with RUNLEDGER_SMTP_PASSWORD)."""

SMTP_PASSWORD = "RUNLEDGER_SMTP_PASSWORD"
"""SMTP password (never logged)."""

SMTP_STARTTLS = "RUNLEDGER_SMTP_STARTTLS"
"""1/true: upgrade the SMTP connection with STARTTLS before logging in (default off)."""

ALERT_RENOTIFY_SECONDS = "RUNLEDGER_ALERT_RENOTIFY_SECONDS"
"""An alert still firing is emailed (and sent to Slack) again after this long (default 43200,
Alertmanager's owner repeat_interval)."""

ALLOW_HTTP_WEBHOOKS = "RUNLEDGER_ALLOW_HTTP_WEBHOOKS"
"""1: accept plain-http Slack webhook URLs in tenant settings (local test receivers only;
default: https only)."""

GRAFANA_URL = "RUNLEDGER_GRAFANA_URL"
"""Base URL of Grafana: alert emails link the alert's dashboard under it and the console links
runs to their traces and logs there (unset: no Grafana links)."""

CONSOLE_SECRET = "RUNLEDGER_CONSOLE_SECRET"
"""Key that signs the console's embed links (default: a random key kept in the ledger)."""

PROMETHEUS_URL = "RUNLEDGER_PROMETHEUS_URL"
"""Prometheus base URL behind the console's tenant-enforcing query proxy (/prom/...)."""

CONSOLE_INSECURE_COOKIE = "RUNLEDGER_CONSOLE_INSECURE_COOKIE"
"""Set to 1 to drop the Secure flag of the console's cookie (plain HTTP on a non-local host)."""
