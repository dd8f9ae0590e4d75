-- runledger ledger schema, version 1. docs/schema.md explains every table.

CREATE TABLE tenants (
    tenant_id        text PRIMARY KEY,
    display_name     text NOT NULL,
    daily_cap_usd    numeric(20, 9) NOT NULL CHECK (daily_cap_usd >= 0),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    paused_reason    text,
    slack_webhook_url text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE playbooks (
    playbook         text PRIMARY KEY,
    description      text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    project_id       text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    playbook         text,
    current_phase    text,
    phase_entered_at timestamptz,
    last_advanced_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_tenant ON projects (tenant_id);

-- Bearer tokens: only a SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    token_sha256     bytea PRIMARY KEY,
    label            text NOT NULL,
    role             text NOT NULL CHECK (role IN ('admin', 'agent', 'owner', 'support', 'finance')),
    tenant_id        text REFERENCES tenants ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    CHECK ((role IN ('admin', 'support', 'finance')) OR tenant_id IS NOT NULL)
);

-- Every accepted event, partitioned by UTC day of occurred_at so retention drops whole days.
-- seq is the ingest sequence: writers hold an advisory lock while they insert and commit,
-- so seq order is commit order and the exporter can tail "seq > last seen" without gaps.
-- (event_id, occurred_at) is the idempotency key: a re-sent event carries both unchanged
-- (clients spool the serialised event), so it lands on the same partition and is refused.
CREATE SEQUENCE events_seq AS bigint;
CREATE TABLE events (
    seq              bigint NOT NULL DEFAULT nextval('events_seq'),
    event_id         uuid NOT NULL,
    type             text NOT NULL,
    tenant_id        text NOT NULL,
    project_id       text NOT NULL,
    run_id           text NOT NULL,
    phase            text NOT NULL,
    role             text NOT NULL,
    playbook         text,
    occurred_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    tokens_in        integer NOT NULL DEFAULT 0,
    tokens_out       integer NOT NULL DEFAULT 0,
    cost_usd         numeric(20, 9) NOT NULL DEFAULT 0,
    model            text,
    cached           boolean NOT NULL DEFAULT false,
    artifact_path    text,
    artifact_version integer,
    attempt          integer,
    trace_id         text,
    span_id          text,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (seq, occurred_at)
) PARTITION BY RANGE (occurred_at);
ALTER SEQUENCE events_seq OWNED BY events.seq;
CREATE UNIQUE INDEX events_event_id ON events (event_id, occurred_at);
CREATE INDEX events_run ON events (run_id);
CREATE INDEX events_tenant_time ON events (tenant_id, occurred_at);

-- Terminal statuses outrank running, which outranks queued; ties go to the later event.
CREATE FUNCTION run_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE status WHEN 'queued' THEN 0 WHEN 'running' THEN 1 ELSE 2 END $$;

-- One row per run, maintained by ingest from the run's events.
CREATE TABLE runs (
    run_id           text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    project_id       text NOT NULL,
    phase            text NOT NULL,
    role             text NOT NULL,
    playbook         text,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'partial', 'failed')),
    status_at        timestamptz NOT NULL,
    attempt          integer NOT NULL DEFAULT 1,
    queued_at        timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    tokens_in        bigint NOT NULL DEFAULT 0,
    tokens_out       bigint NOT NULL DEFAULT 0,
    cost_usd         numeric(20, 9) NOT NULL DEFAULT 0,
    error            text,
    model            text,
    cached           boolean NOT NULL DEFAULT false,
    trace_id         text,
    artifact_path    text,
    artifact_version integer,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_tenant_started ON runs (tenant_id, started_at);
CREATE INDEX runs_project ON runs (project_id);
CREATE INDEX runs_status ON runs (status) WHERE status IN ('queued', 'running');

-- Failures, deduplicated by run and reason.
CREATE TABLE failures (
    failure_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           text NOT NULL,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    project_id       text NOT NULL,
    phase            text NOT NULL,
    role             text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('run_failed', 'validation_failed')),
    reason           text NOT NULL,
    artifact_ref     text,
    trace_id         text,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    count            integer NOT NULL DEFAULT 1,
    UNIQUE (run_id, reason)
);
CREATE INDEX failures_last_seen ON failures (tenant_id, last_seen DESC);

-- A tenant's spend per UTC day against its daily cap.
CREATE TABLE caps (
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    date             date NOT NULL,
    daily_cap_usd    numeric(20, 9) NOT NULL CHECK (daily_cap_usd >= 0),
    spent_usd        numeric(20, 9) NOT NULL DEFAULT 0,
    blocked          boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, date)
);

-- Called by ingest_batch once its accepted events are inserted (they are in ingest_stage):
-- a hook for later migrations (budget leases net the spend they settled).
CREATE FUNCTION ingest_apply_leases() RETURNS void
    LANGUAGE plpgsql AS $$ BEGIN END $$;

-- Whether a day's spend has reached the cap in force. Later migrations refine it (budget
-- leases, temporary raises); ingest calls it for every (tenant, day) a batch spends on.
CREATE FUNCTION cap_blocked(c caps) RETURNS boolean
    LANGUAGE sql STABLE AS $$ SELECT c.spent_usd >= c.daily_cap_usd $$;

-- Every change of a cap: who, why, from what to what, and until when.
CREATE TABLE cap_raises (
    raise_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    scope            text NOT NULL DEFAULT 'tenant_daily',
    old_value_usd    numeric(20, 9) NOT NULL,
    new_value_usd    numeric(20, 9) NOT NULL,
    reason           text NOT NULL CHECK (length(btrim(reason)) > 0),
    author           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    reverted_at      timestamptz
);
CREATE INDEX cap_raises_open ON cap_raises (expires_at) WHERE reverted_at IS NULL;

-- Proofs sent to owners (proof completion rate, proof overdue).
CREATE TABLE proofs (
    proof_id         text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    project_id       text NOT NULL,
    requested_at     timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    completed_at     timestamptz,
    approved         boolean
);
CREATE INDEX proofs_open ON proofs (tenant_id, due_at) WHERE completed_at IS NULL;

-- Publisher freezes per playbook (quality sampling can freeze; an admin lifts).
CREATE TABLE publisher_freezes (
    freeze_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    playbook         text NOT NULL,
    reason           text NOT NULL,
    frozen_by        text NOT NULL,
    frozen_at        timestamptz NOT NULL DEFAULT now(),
    lifted_by        text,
    lifted_at        timestamptz
);
CREATE UNIQUE INDEX publisher_freezes_active ON publisher_freezes (playbook) WHERE lifted_at IS NULL;

-- In-app banners (owner: tenant_id set; admin: tenant_id NULL).
CREATE TABLE notifications (
    notification_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text REFERENCES tenants ON DELETE CASCADE,
    audience         text NOT NULL CHECK (audience IN ('owner', 'admin')),
    severity         text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    title            text NOT NULL,
    body             text NOT NULL,
    source           text NOT NULL,
    dedupe_key       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    dismissed_at     timestamptz
);
CREATE UNIQUE INDEX notifications_dedupe ON notifications (dedupe_key) WHERE resolved_at IS NULL;

-- Every admin action and every cap change.
CREATE TABLE audit_log (
    audit_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,
    actor_role       text NOT NULL,
    action           text NOT NULL,
    tenant_id        text,
    target           text,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- Redacted prompts, when a tenant opts in (high-cardinality: retention applies).
CREATE TABLE prompt_audit (
    prompt_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           text NOT NULL,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    model            text,
    prompt_redacted  text NOT NULL,
    response_redacted text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prompt_audit_created ON prompt_audit (created_at);
CREATE INDEX prompt_audit_run ON prompt_audit (run_id);

-- Span summaries for linking runs to traces (high-cardinality: retention applies).
CREATE TABLE trace_spans (
    trace_id         text NOT NULL,
    span_id          text NOT NULL,
    parent_span_id   text,
    run_id           text NOT NULL,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name             text NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      double precision NOT NULL,
    attributes       jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX trace_spans_started ON trace_spans (started_at);
CREATE INDEX trace_spans_run ON trace_spans (run_id);

-- Per-day aggregates of events, kept 13 months after the raw events are dropped.
CREATE TABLE daily_rollups (
    day              date NOT NULL,
    tenant_id        text NOT NULL,
    model            text NOT NULL DEFAULT '',
    phase            text NOT NULL,
    role             text NOT NULL,
    type             text NOT NULL,
    events           bigint NOT NULL,
    runs             bigint NOT NULL,
    tokens_in        bigint NOT NULL,
    tokens_out       bigint NOT NULL,
    cost_usd         numeric(20, 9) NOT NULL,
    rolled_up_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, tenant_id, model, phase, role, type)
);

-- ingest_batch(batch json, check_stored boolean), which writes a batch of events and all
-- their effects, is defined in 0005_ingest_batch.sql.
