-- Alerts: where a tenant's owner notifications go, what each banner came from, muting
-- (Alertmanager silences, recorded here for the audit and the listing) and deliveries.
--
-- Owner addresses and the Slack webhook are tenant settings managed through the API and the
-- CLI (never in a config file). slack_webhook_url exists since the baseline; a tenant gets
-- Slack only once it opts in as well.
ALTER TABLE tenants
    ADD COLUMN owner_emails text[] NOT NULL DEFAULT '{}',
    ADD COLUMN slack_opt_in boolean NOT NULL DEFAULT false;

-- A banner made from an Alertmanager alert keeps the alert's identity (fingerprint and
-- start, what alert_outcomes judges) and its links. notified_at: when the owner was last
-- emailed (and sent to Slack) about it, so a re-sent notification is not mailed again
-- before the renotify interval.
ALTER TABLE notifications
    ADD COLUMN alertname     text,
    ADD COLUMN fingerprint   text,
    ADD COLUMN starts_at     timestamptz,
    ADD COLUMN runbook_url   text,
    ADD COLUMN dashboard_url text,
    ADD COLUMN notified_at   timestamptz;
CREATE INDEX notifications_open ON notifications (audience, tenant_id, created_at DESC)
    WHERE resolved_at IS NULL;
CREATE INDEX notifications_fingerprint ON notifications (fingerprint);

-- One mute: an Alertmanager silence (silence_id is Alertmanager's id) on a tenant's alerts,
-- or on one alert of the tenant. Alertmanager enforces it; this row records who asked, why,
-- until when, and who removed it.
CREATE TABLE alert_silences (
    silence_id       text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    alertname        text,
    reason           text NOT NULL,
    created_by       text NOT NULL,
    created_by_role  text NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_at       timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz,
    removed_by       text
);
CREATE INDEX alert_silences_tenant ON alert_silences (tenant_id, ends_at DESC);

-- One email or Slack delivery of a notification, after its retries. error names the
-- failure (an exception class or an HTTP status), never an address or a webhook URL.
CREATE TABLE alert_deliveries (
    delivery_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint REFERENCES notifications ON DELETE CASCADE,
    tenant_id        text REFERENCES tenants ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('email', 'slack')),
    status           text NOT NULL CHECK (status IN ('delivered', 'failed')),
    attempts         integer NOT NULL CHECK (attempts >= 1),
    error            text,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_deliveries_notification ON alert_deliveries (notification_id);
