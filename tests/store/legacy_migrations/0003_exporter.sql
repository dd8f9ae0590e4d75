-- The Prometheus exporter's needs: alert outcomes (alert precision) and one lookup index.

-- One row per judged alert: was it a true or a false positive? The alerts work (and people
-- answering an in-app banner) fill it; the exporter exposes the counts as
-- runledger_alert_judgements_total{status}. Rows are never deleted: the exported counter is
-- the row count and must not go down.
CREATE TABLE alert_outcomes (
    outcome_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint      text NOT NULL,
    alertname        text NOT NULL,
    audience         text NOT NULL CHECK (audience IN ('owner', 'admin')),
    tenant_id        text REFERENCES tenants ON DELETE SET NULL,
    started_at       timestamptz NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('true_positive', 'false_positive')),
    judged_by        text NOT NULL,
    judged_at        timestamptz NOT NULL DEFAULT now(),
    note             text,
    UNIQUE (fingerprint, started_at)
);
CREATE INDEX alert_outcomes_judged ON alert_outcomes (judged_at);

-- The exporter looks up, per tailed event, when a project entered a phase (time-to-gate)
-- and its last failure and success in a phase (recovery time). Without this index those
-- look-ups scan a tenant's whole history.
CREATE INDEX events_project_time ON events (project_id, occurred_at);
