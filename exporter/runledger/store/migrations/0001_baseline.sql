-- runledger ledger schema: the baseline. docs/schema.md explains every table.
--
-- This file is the squash of the migrations 0001-0005 written before the first deployment;
-- tests/store/test_baseline.py proves that it builds the same schema as that chain did.
-- Shipped migrations are append-only: never edit this file (runledger migrate refuses a
-- database whose applied migration's checksum differs from its file); change the schema by
-- adding 0002_<what>.sql, 0003_<what>.sql, ...

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

-- A tenant's spend per UTC day against its daily cap, and the budget leases drawn on it.
-- docs/caps.md explains the design; in short, for one row:
--
--   spend     = settled_usd + spent_usd - leased_spent_usd      (cap_spend_usd)
--   committed = spend + reserved_usd            (never above the effective cap)
--
-- settled_usd is spend reported through leases; spent_usd stays the ledger record (every
-- event's cost_usd, maintained by ingest); leased_spent_usd is the part of spent_usd whose
-- events name an open or closed lease (payload.lease_id), already in settled_usd, so no
-- dollar is counted twice. reserved_usd is what open leases hold and have not yet spent.
CREATE TABLE caps (
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    date             date NOT NULL,
    daily_cap_usd    numeric(20, 9) NOT NULL CHECK (daily_cap_usd >= 0),
    spent_usd        numeric(20, 9) NOT NULL DEFAULT 0,
    blocked          boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    reserved_usd     numeric(20, 9) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    settled_usd      numeric(20, 9) NOT NULL DEFAULT 0,
    leased_spent_usd numeric(20, 9) NOT NULL DEFAULT 0,
    warned_at        timestamptz,
    blocked_at       timestamptz,
    PRIMARY KEY (tenant_id, date)
);

-- A cap row's spend, the one definition every SQL site uses. LANGUAGE sql IMMUTABLE with a
-- single expression, so the planner inlines it (no call per row on the hot paths).
CREATE FUNCTION cap_spend_usd(c caps) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT c.settled_usd + c.spent_usd - c.leased_spent_usd $$;

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

-- One budget lease: a chunk of a tenant's daily cap reserved for one run, drawn locally.
CREATE TABLE cap_leases (
    lease_id         text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    date             date NOT NULL,
    holder           text NOT NULL,
    role             text,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'expired')),
    granted_usd      numeric(20, 9) NOT NULL DEFAULT 0,
    reserved_usd     numeric(20, 9) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    spent_usd        numeric(20, 9) NOT NULL DEFAULT 0,
    ledger_spent_usd numeric(20, 9) NOT NULL DEFAULT 0,
    opened_at        timestamptz NOT NULL,
    renewed_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    closed_at        timestamptz
);
CREATE INDEX cap_leases_open ON cap_leases (tenant_id, expires_at) WHERE status = 'open';
CREATE INDEX cap_leases_closed ON cap_leases (closed_at) WHERE status <> 'open';

-- Today's numbers per tenant, with the 80% and 100% marks as data.
CREATE VIEW cap_usage AS
SELECT c.tenant_id,
       c.date,
       c.daily_cap_usd,
       cap_spend_usd(c) AS spend_usd,
       c.reserved_usd,
       CASE WHEN c.daily_cap_usd > 0 THEN cap_spend_usd(c) / c.daily_cap_usd END AS utilisation,
       cap_spend_usd(c) >= 0.8 * c.daily_cap_usd AS at_80,
       cap_spend_usd(c) >= c.daily_cap_usd AS at_100,
       c.blocked,
       c.warned_at,
       c.blocked_at
  FROM caps c;

-- The cap in force at p_at: the base cap, or the largest unexpired temporary raise.
CREATE FUNCTION cap_effective_usd(p_tenant text, p_at timestamptz) RETURNS numeric
    LANGUAGE sql STABLE AS $$
    SELECT GREATEST(
        t.daily_cap_usd,
        (SELECT max(r.new_value_usd) FROM cap_raises r
          WHERE r.tenant_id = p_tenant AND r.scope = 'tenant_daily'
            AND r.expires_at IS NOT NULL AND r.created_at <= p_at AND r.expires_at > p_at
            AND r.reverted_at IS NULL))
      FROM tenants t WHERE t.tenant_id = p_tenant
$$;

-- Result row of every lease operation.
CREATE TYPE cap_lease_result AS (
    status          text,     -- granted, settled, closed, blocked, contended, rollover,
                              -- expired, unknown, paused, invalid
    lease_id        text,
    tenant_id       text,
    day             date,
    granted_usd     numeric,  -- added to the lease by this call
    lease_reserved  numeric,  -- what the lease now holds
    expires_at      timestamptz,
    cap_usd         numeric,
    spend_usd       numeric,
    reserved_usd    numeric   -- held by all leases of the tenant today
);

-- Grant up to p_want (at least p_min) from the caps row locked by the caller.
-- Grants shrink to a 1/p_divisor share of the free room as the cap nears, so the last
-- dollars go to whoever needs them instead of sitting in one lease.
CREATE FUNCTION _cap_grant(c caps, p_cap numeric, p_want numeric, p_min numeric, p_divisor integer)
    RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_cap - cap_spend_usd(c) - c.reserved_usd < p_min THEN NULL
        ELSE LEAST(
            p_want,
            GREATEST(p_min, trunc((p_cap - cap_spend_usd(c) - c.reserved_usd) / p_divisor, 9)),
            p_cap - cap_spend_usd(c) - c.reserved_usd)
    END
$$;

-- Lock (creating if needed) the caps row of a tenant's day and refresh its effective cap.
CREATE FUNCTION _cap_row(p_tenant text, p_day date, p_cap numeric) RETURNS caps
    LANGUAGE plpgsql AS $$
DECLARE
    c caps;
BEGIN
    INSERT INTO caps (tenant_id, date, daily_cap_usd) VALUES (p_tenant, p_day, p_cap)
        ON CONFLICT (tenant_id, date) DO NOTHING;
    SELECT * INTO c FROM caps WHERE tenant_id = p_tenant AND date = p_day FOR UPDATE;
    IF c.daily_cap_usd IS DISTINCT FROM p_cap THEN
        UPDATE caps SET daily_cap_usd = p_cap, updated_at = now()
         WHERE tenant_id = p_tenant AND date = p_day RETURNING * INTO c;
    END IF;
    RETURN c;
END $$;

-- Mark 80% and refusals on the row, as data for owners and alerts.
CREATE FUNCTION _cap_marks(p_tenant text, p_day date, p_cap numeric, p_now timestamptz,
                           p_blocked boolean) RETURNS caps LANGUAGE plpgsql AS $$
DECLARE
    c caps;
BEGIN
    UPDATE caps u SET
        warned_at = COALESCE(warned_at, CASE
            WHEN cap_spend_usd(u) + reserved_usd >= 0.8 * p_cap THEN p_now END),
        blocked = CASE WHEN p_blocked THEN true ELSE cap_spend_usd(u) >= p_cap END,
        blocked_at = CASE WHEN p_blocked THEN COALESCE(blocked_at, p_now) ELSE blocked_at END,
        updated_at = now()
     WHERE tenant_id = p_tenant AND date = p_day RETURNING * INTO c;
    RETURN c;
END $$;

CREATE FUNCTION cap_lease_open(p_tenant text, p_want numeric, p_min numeric, p_holder text,
                               p_role text, p_ttl_s double precision, p_divisor integer,
                               p_now timestamptz) RETURNS cap_lease_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := COALESCE(p_now, now());
    v_day   date := (v_now AT TIME ZONE 'UTC')::date;
    v_cap   numeric;
    v_state text;
    v_blocked boolean;
    c       caps;
    g       numeric;
    l       cap_leases;
BEGIN
    SELECT status INTO v_state FROM tenants WHERE tenant_id = p_tenant;
    IF NOT FOUND THEN
        RETURN ROW('unknown', NULL, p_tenant, v_day, 0, 0, NULL, NULL, NULL, NULL)::cap_lease_result;
    END IF;
    v_cap := cap_effective_usd(p_tenant, v_now);
    c := _cap_row(p_tenant, v_day, v_cap);
    IF v_state = 'paused' THEN
        RETURN ROW('paused', NULL, p_tenant, v_day, 0, 0, NULL, v_cap,
                   cap_spend_usd(c), c.reserved_usd)::cap_lease_result;
    END IF;
    g := _cap_grant(c, v_cap, p_want, p_min, p_divisor);
    IF g IS NULL THEN
        -- Blocked only when even every other lease giving back all it holds would not make
        -- room: otherwise the room exists but is held, and the caller retries (no phantom
        -- refusal).
        v_blocked := cap_spend_usd(c) + p_min > v_cap;
        c := _cap_marks(p_tenant, v_day, v_cap, v_now, v_blocked);
        RETURN ROW(CASE WHEN v_blocked THEN 'blocked' ELSE 'contended' END,
                   NULL, p_tenant, v_day, 0, 0, NULL, v_cap,
                   cap_spend_usd(c), c.reserved_usd)::cap_lease_result;
    END IF;
    UPDATE caps SET reserved_usd = reserved_usd + g
     WHERE tenant_id = p_tenant AND date = v_day;
    INSERT INTO cap_leases (tenant_id, date, holder, role, granted_usd, reserved_usd,
                            opened_at, renewed_at, expires_at)
        VALUES (p_tenant, v_day, p_holder, p_role, g, g, v_now, v_now,
                v_now + make_interval(secs => p_ttl_s))
        RETURNING * INTO l;
    c := _cap_marks(p_tenant, v_day, v_cap, v_now, false);
    RETURN ROW('granted', l.lease_id, p_tenant, v_day, g, l.reserved_usd, l.expires_at, v_cap,
               cap_spend_usd(c), c.reserved_usd)::cap_lease_result;
END $$;

-- Report a lease's cumulative spend (settling it), then top it up by up to p_want, or close
-- it (p_close) returning whatever it still holds. p_tenant, when given, must own the lease.
-- When a top-up fails the lease keeps at most p_keep (what covers the holder's calls in
-- flight) and gives the rest back: two runs each holding a little while waiting for the
-- other's share would otherwise wait on each other until the lease expires.
CREATE FUNCTION cap_lease_sync(p_lease text, p_tenant text, p_spent_total numeric,
                               p_want numeric, p_min numeric, p_ttl_s double precision,
                               p_divisor integer, p_close boolean, p_now timestamptz,
                               p_keep numeric)
    RETURNS cap_lease_result LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := COALESCE(p_now, now());
    v_today   date := (v_now AT TIME ZONE 'UTC')::date;
    v_cap     numeric;
    v_delta   numeric;
    v_release numeric;
    v_status  text;
    v_blocked boolean;
    c         caps;
    g         numeric := 0;
    l         cap_leases;
BEGIN
    SELECT * INTO l FROM cap_leases WHERE lease_id = p_lease FOR UPDATE;
    IF NOT FOUND OR (p_tenant IS NOT NULL AND l.tenant_id <> p_tenant) THEN
        RETURN ROW('unknown', p_lease, p_tenant, NULL, 0, 0, NULL, NULL, NULL, NULL)::cap_lease_result;
    END IF;
    IF l.status <> 'open' THEN
        RETURN ROW(CASE WHEN l.status = 'expired' THEN 'expired' ELSE 'closed' END,
                   l.lease_id, l.tenant_id, l.date, 0, 0, l.expires_at, NULL, NULL, NULL)::cap_lease_result;
    END IF;
    v_delta := p_spent_total - l.spent_usd;
    IF v_delta < 0 THEN
        RETURN ROW('invalid', l.lease_id, l.tenant_id, l.date, 0, l.reserved_usd, l.expires_at,
                   NULL, l.spent_usd, NULL)::cap_lease_result;
    END IF;
    IF l.date = v_today THEN
        v_cap := cap_effective_usd(l.tenant_id, v_now);
        c := _cap_row(l.tenant_id, l.date, v_cap);
    ELSE
        -- A lease outlived its day: it settles against that day's row and cap.
        SELECT * INTO c FROM caps WHERE tenant_id = l.tenant_id AND date = l.date FOR UPDATE;
        v_cap := c.daily_cap_usd;
    END IF;
    -- Spend moves from reserved to settled; an overrun beyond the lease is settled as is.
    v_release := LEAST(v_delta, l.reserved_usd);
    IF p_close THEN
        v_release := l.reserved_usd;
    END IF;
    UPDATE caps SET settled_usd = settled_usd + v_delta, reserved_usd = reserved_usd - v_release
     WHERE tenant_id = l.tenant_id AND date = l.date RETURNING * INTO c;
    l.reserved_usd := l.reserved_usd - v_release;
    l.spent_usd := p_spent_total;
    v_status := 'settled';
    IF p_close THEN
        l.status := 'closed';
        l.closed_at := v_now;
        v_status := 'closed';
    ELSIF p_want > 0 THEN
        IF l.date <> v_today THEN
            v_status := 'rollover';
        ELSE
            g := _cap_grant(c, v_cap, p_want, p_min, p_divisor);
            IF g IS NULL THEN
                -- What this lease already holds is ours, not held by others.
                v_blocked := cap_spend_usd(c) + l.reserved_usd + p_min > v_cap;
                v_status := CASE WHEN v_blocked THEN 'blocked' ELSE 'contended' END;
                g := 0;
                IF p_keep IS NOT NULL AND l.reserved_usd > p_keep THEN
                    UPDATE caps SET reserved_usd = reserved_usd - (l.reserved_usd - p_keep)
                     WHERE tenant_id = l.tenant_id AND date = l.date;
                    l.reserved_usd := p_keep;
                END IF;
            ELSE
                UPDATE caps SET reserved_usd = reserved_usd + g
                 WHERE tenant_id = l.tenant_id AND date = l.date;
                l.reserved_usd := l.reserved_usd + g;
                l.granted_usd := l.granted_usd + g;
                v_status := 'granted';
            END IF;
        END IF;
    END IF;
    IF NOT p_close THEN
        l.renewed_at := v_now;
        l.expires_at := GREATEST(l.expires_at, v_now + make_interval(secs => p_ttl_s));
    END IF;
    UPDATE cap_leases SET status = l.status, closed_at = l.closed_at, granted_usd = l.granted_usd,
                          reserved_usd = l.reserved_usd, spent_usd = l.spent_usd,
                          renewed_at = l.renewed_at, expires_at = l.expires_at
     WHERE lease_id = l.lease_id;
    c := _cap_marks(l.tenant_id, l.date, v_cap, v_now, v_status = 'blocked');
    RETURN ROW(v_status, l.lease_id, l.tenant_id, l.date, g, l.reserved_usd, l.expires_at, v_cap,
               cap_spend_usd(c), c.reserved_usd)::cap_lease_result;
END $$;

-- Expire the open leases of one tenant whose holders stopped renewing them: give back what
-- they hold, and settle what the ledger recorded for them beyond what they reported.
-- One tenant per call keeps lock order (leases, then that tenant's caps rows) the same as
-- ingest's, so the two cannot deadlock.
CREATE FUNCTION cap_leases_reclaim(p_tenant text, p_now timestamptz) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := COALESCE(p_now, now());
    l     cap_leases;
    n     integer := 0;
BEGIN
    FOR l IN SELECT * FROM cap_leases
              WHERE tenant_id = p_tenant AND status = 'open' AND expires_at <= v_now
              ORDER BY lease_id FOR UPDATE
    LOOP
        UPDATE caps SET
            reserved_usd = reserved_usd - l.reserved_usd,
            settled_usd = settled_usd + GREATEST(l.ledger_spent_usd - l.spent_usd, 0)
         WHERE tenant_id = l.tenant_id AND date = l.date;
        UPDATE cap_leases SET status = 'expired', reserved_usd = 0, closed_at = v_now,
                              spent_usd = GREATEST(spent_usd, ledger_spent_usd)
         WHERE lease_id = l.lease_id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Ingest side (called by ingest_batch on the accepted events of a batch): the cost of an
-- event that names a live (open or closed) lease was settled through that lease; count it in
-- leased_spent_usd so spend does not count it twice. Events naming an expired lease, or
-- none, count through spent_usd alone.
CREATE FUNCTION ingest_apply_leases() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ingest_stage n WHERE n.cost_usd > 0 AND n.payload ? 'lease_id')
    THEN
        RETURN;
    END IF;
    -- Lock the named leases first (same order as reclaim) so the status read below is final.
    PERFORM 1 FROM cap_leases l
      WHERE l.lease_id IN (SELECT n.payload->>'lease_id' FROM ingest_stage n
                            WHERE n.cost_usd > 0 AND n.payload ? 'lease_id')
      ORDER BY l.lease_id FOR UPDATE OF l;
    WITH tagged AS (
        SELECT l.lease_id, n.tenant_id, (n.occurred_at AT TIME ZONE 'UTC')::date AS day,
               n.cost_usd AS cost
          FROM ingest_stage n
          JOIN cap_leases l ON l.lease_id = n.payload->>'lease_id' AND l.tenant_id = n.tenant_id
         WHERE n.cost_usd > 0 AND n.payload ? 'lease_id' AND l.status <> 'expired'
    ), per_lease AS (
        UPDATE cap_leases l SET ledger_spent_usd = l.ledger_spent_usd + s.cost
          FROM (SELECT lease_id, sum(cost) AS cost FROM tagged GROUP BY lease_id) s
         WHERE l.lease_id = s.lease_id
    )
    INSERT INTO caps AS c (tenant_id, date, daily_cap_usd, leased_spent_usd)
        SELECT s.tenant_id, s.day, t.daily_cap_usd, sum(s.cost)
          FROM tagged s JOIN tenants t USING (tenant_id)
         GROUP BY s.tenant_id, s.day, t.daily_cap_usd
         ORDER BY s.tenant_id, s.day
        ON CONFLICT (tenant_id, date) DO UPDATE
            SET leased_spent_usd = c.leased_spent_usd + excluded.leased_spent_usd;
END $$;

-- Whether a day's spend has reached the cap in force, by the same measure the lease API
-- enforces (docs/caps.md): the cap in force is the base cap or an unexpired temporary
-- raise. Ingest calls it for every (tenant, day) a batch spends on.
CREATE FUNCTION cap_blocked(c caps) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT cap_spend_usd(c) >= COALESCE(cap_effective_usd(c.tenant_id, now()), c.daily_cap_usd)
$$;

-- The ingest advisory lock ("runlings"), held from inserting a batch's events until commit
-- so that events.seq order is commit order. This is its one definition: ingest_batch and
-- Python (runledger.store.locks, for retention) take pg_advisory_xact_lock(ingest_lock_key()).
CREATE FUNCTION ingest_lock_key() RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 8247619704503297907::bigint $$;
-- Ingest one validated batch in the caller's transaction: a JSON array of events as
-- runledger.events serialises them, or the request body {"events": [...]} as received when
-- every event in it passed validation (names are lower-cased here as validation does).
-- Returns one row per event that was not accepted: (ord, 'tenant' | 'project' | 'run' |
-- 'duplicate'), ord being its position in the array.
--
-- The work is done by the steps below, in this order, each a function of its own so that
-- it can be read, timed (pg_stat_user_functions) and replaced by a later migration alone.
-- They share the session's temporary table ingest_stage, which holds the batch's events
-- still accepted, and run in the caller's transaction.
--
-- Concurrency: most of the work runs in parallel with other batches. Only inserting the
-- events (which draws their seq) and adding the tenants' day spend happen under the ingest
-- advisory lock, held to commit, so events.seq order is commit order and the hot caps rows
-- are written by one batch at a time. Rows of projects, runs and failures are written in
-- key order, so concurrent batches take their locks in the same order. Two races are
-- detected and raised, rolling the whole batch back for the caller to retry (runledger's
-- Ingestor does, with check_stored): another tenant's batch created a project or run first
-- (RL001), or some of the events are already stored (RL002: a re-send, or a concurrent
-- batch with the same events committed first).
CREATE FUNCTION ingest_batch(batch json, check_stored boolean DEFAULT false)
    RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM ingest_stage_batch(batch);
    RETURN QUERY SELECT * FROM ingest_drop_foreign();
    IF check_stored THEN
        RETURN QUERY SELECT * FROM ingest_drop_stored();
        IF NOT EXISTS (SELECT 1 FROM ingest_stage) THEN
            RETURN;
        END IF;
    END IF;
    PERFORM ingest_apply_projects();
    PERFORM ingest_apply_runs();
    PERFORM ingest_apply_failures();
    PERFORM ingest_apply_proofs();
    PERFORM ingest_insert_events();
    PERFORM ingest_apply_leases();
    PERFORM ingest_apply_caps();
END
$fn$;

-- Step: stage the batch into ingest_stage. A temporary table, created once per session and
-- emptied at commit, because every later step reads the batch set-wise, several times.
CREATE FUNCTION ingest_stage_batch(batch json) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
        ord integer NOT NULL, event_id uuid NOT NULL, type text NOT NULL,
        tenant_id text NOT NULL, project_id text NOT NULL, run_id text NOT NULL,
        phase text NOT NULL, role text NOT NULL, playbook text,
        occurred_at timestamptz NOT NULL, tokens_in integer NOT NULL,
        tokens_out integer NOT NULL, cost_usd numeric NOT NULL, model text,
        cached boolean NOT NULL, artifact_path text, artifact_version integer,
        attempt integer, trace_id text, span_id text, payload jsonb NOT NULL
    ) ON COMMIT DELETE ROWS;

    INSERT INTO ingest_stage AS s (ord, event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload)
    SELECT x.n - 1, x.event_id, x.type, x.tenant_id, x.project_id, x.run_id, lower(x.phase), lower(x.role), lower(x.playbook), x.occurred_at,
           COALESCE(x.tokens_in, 0), COALESCE(x.tokens_out, 0), COALESCE(x.cost_usd, 0), x.model,
           COALESCE(x.cached, false), x.artifact_path, x.artifact_version, x.attempt, x.trace_id,
           x.span_id, COALESCE(x.payload, '{}'::jsonb)
    FROM ROWS FROM (json_to_recordset(
        CASE WHEN json_typeof(batch) = 'object' THEN batch->'events' ELSE batch END) AS (
        event_id uuid, type text, tenant_id text, project_id text, run_id text, phase text,
        role text, playbook text, occurred_at timestamptz, tokens_in integer,
        tokens_out integer, cost_usd numeric, model text, cached boolean, artifact_path text,
        artifact_version integer, attempt integer, trace_id text, span_id text, payload jsonb
    )) WITH ORDINALITY AS x(event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload, n);
END
$fn$;

-- Step: drop (and return) the events of unknown tenants, or of projects or runs that
-- belong to another tenant: a tenant never writes into another's rows.
CREATE FUNCTION ingest_drop_foreign() RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    -- Ownership, checked per distinct (tenant, project, run); rejections are rare, so the
    -- DELETE runs only when there is something to drop.
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT tenant_id, project_id, run_id FROM ingest_stage) c
        LEFT JOIN tenants t ON t.tenant_id = c.tenant_id
        LEFT JOIN projects p ON p.project_id = c.project_id
        LEFT JOIN runs r ON r.run_id = c.run_id
        WHERE t.tenant_id IS NULL OR p.tenant_id <> c.tenant_id OR r.tenant_id <> c.tenant_id
    ) THEN
        RETURN QUERY WITH combos AS (
            SELECT DISTINCT tenant_id, project_id, run_id FROM ingest_stage
        ), bad AS (
            SELECT c.tenant_id, c.project_id, c.run_id,
                   CASE WHEN t.tenant_id IS NULL THEN 'tenant'
                        WHEN p.tenant_id <> c.tenant_id THEN 'project'
                        WHEN r.tenant_id <> c.tenant_id THEN 'run'
                   END AS why
            FROM combos c
            LEFT JOIN tenants t ON t.tenant_id = c.tenant_id
            LEFT JOIN projects p ON p.project_id = c.project_id
            LEFT JOIN runs r ON r.run_id = c.run_id
        )
        DELETE FROM ingest_stage s USING bad b
        WHERE b.why IS NOT NULL
          AND s.tenant_id = b.tenant_id AND s.project_id = b.project_id AND s.run_id = b.run_id
        RETURNING s.ord, b.why;
    END IF;
END
$fn$;

-- Step, with check_stored only: drop (and return) the events already stored. Those (a
-- re-send) are found when the events are inserted, under the lock: the batch is then rolled
-- back (RL002) and retried with check_stored, which drops them here, before any effect can
-- count them again. Re-sends are rare, so the common batch does not pay for the look-up.
CREATE FUNCTION ingest_drop_stored() RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    ANALYZE ingest_stage;  -- a temporary table has no statistics: plan index probes
    RETURN QUERY
        DELETE FROM ingest_stage s
        WHERE EXISTS (SELECT 1 FROM events e
                      WHERE e.event_id = s.event_id AND e.occurred_at = s.occurred_at)
        RETURNING s.ord, 'duplicate'::text;
END
$fn$;

-- Step: create or advance the batch's projects (playbook, current phase, last advance);
-- RL001 when another tenant created one of them since the ownership step.
CREATE FUNCTION ingest_apply_projects() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO projects AS p (project_id, tenant_id, playbook, current_phase, phase_entered_at,
                               last_advanced_at)
    SELECT project_id, min(tenant_id), max(playbook),
           (array_agg(CASE WHEN type = 'phase_advanced' THEN lower(payload->>'to_phase') ELSE phase END
                      ORDER BY occurred_at DESC, ord DESC)
                FILTER (WHERE type = 'phase_entered'
                           OR (type = 'phase_advanced' AND payload->>'to_phase' IS NOT NULL)))[1],
           max(occurred_at) FILTER (WHERE type = 'phase_entered'
                                       OR (type = 'phase_advanced' AND payload->>'to_phase' IS NOT NULL)),
           max(occurred_at) FILTER (WHERE type = 'phase_advanced')
    FROM ingest_stage GROUP BY project_id ORDER BY project_id
    ON CONFLICT (project_id) DO UPDATE SET
        playbook = COALESCE(excluded.playbook, p.playbook),
        current_phase = CASE WHEN excluded.phase_entered_at IS NOT NULL
                              AND (p.phase_entered_at IS NULL
                                   OR excluded.phase_entered_at >= p.phase_entered_at)
                             THEN excluded.current_phase ELSE p.current_phase END,
        phase_entered_at = GREATEST(p.phase_entered_at, excluded.phase_entered_at),
        last_advanced_at = GREATEST(p.last_advanced_at, excluded.last_advanced_at)
    -- Most batches only touch known projects without changing them: skip those rewrites.
    WHERE p.tenant_id = excluded.tenant_id
      AND ((excluded.playbook IS NOT NULL AND excluded.playbook IS DISTINCT FROM p.playbook)
           OR (excluded.phase_entered_at IS NOT NULL
               AND (p.phase_entered_at IS NULL OR excluded.phase_entered_at >= p.phase_entered_at))
           OR (excluded.last_advanced_at IS NOT NULL
               AND (p.last_advanced_at IS NULL OR excluded.last_advanced_at > p.last_advanced_at)));

    -- ON CONFLICT locked every existing row, rewritten or not, so this sees each project's
    -- final owner.
    IF EXISTS (SELECT 1 FROM projects p
               JOIN (SELECT DISTINCT project_id, tenant_id FROM ingest_stage) s USING (project_id)
               WHERE p.tenant_id <> s.tenant_id) THEN
        RAISE EXCEPTION 'a project of this batch was created by another tenant meanwhile'
            USING ERRCODE = 'RL001';
    END IF;
END
$fn$;

-- Step: create or update one runs row per run of the batch (status, times, tokens, cost,
-- last model and artifact); RL001 when another tenant created one of them meanwhile.
CREATE FUNCTION ingest_apply_runs() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    written integer;
BEGIN
    WITH agg AS (
        -- Plain aggregates only: an ordered aggregate sorts every run's events separately,
        -- which costs more than the rest of the statement; "latest" values come from the
        -- DISTINCT ON look-ups below, one sort each.
        SELECT run_id,
               -- constant within a run (tenant and project are enforced; a run is one role
               -- working one phase, with one trace), so the cheapest aggregate will do
               min(tenant_id) AS tenant_id, min(project_id) AS project_id, min(phase) AS phase,
               min(role) AS role, max(playbook) AS playbook, max(trace_id) AS trace_id,
               min(occurred_at) AS first_at,
               COALESCE(max(attempt), 1) AS attempt,
               min(occurred_at) FILTER (WHERE type = 'run_queued') AS queued_at,
               min(occurred_at) FILTER (WHERE type = 'run_started') AS started_at,
               max(occurred_at) FILTER (WHERE type IN ('run_finished', 'run_failed')) AS finished_at,
               sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
               sum(cost_usd) AS cost_usd,
               bool_or(cached) AS cached
        FROM ingest_stage GROUP BY run_id
    ), status AS (
        SELECT DISTINCT ON (run_id) run_id, status, occurred_at AS status_at
        FROM (SELECT run_id, occurred_at, ord,
                     CASE type WHEN 'run_queued' THEN 'queued' WHEN 'run_started' THEN 'running'
                               WHEN 'run_finished' THEN COALESCE(payload->>'status', 'succeeded')
                               ELSE 'failed' END AS status
              FROM ingest_stage
              WHERE type IN ('run_queued', 'run_started', 'run_finished', 'run_failed')) st
        ORDER BY run_id, run_status_rank(status) DESC, occurred_at DESC, ord DESC
    ), failure AS (
        SELECT DISTINCT ON (run_id) run_id, payload->>'reason' AS reason
        FROM ingest_stage WHERE type = 'run_failed'
        ORDER BY run_id, occurred_at DESC, ord DESC
    ), model AS (
        SELECT DISTINCT ON (run_id) run_id, model
        FROM ingest_stage WHERE model IS NOT NULL
        ORDER BY run_id, occurred_at DESC, ord DESC
    ), artifact AS (
        SELECT DISTINCT ON (run_id) run_id, artifact_path, artifact_version
        FROM ingest_stage WHERE artifact_path IS NOT NULL
        ORDER BY run_id, occurred_at DESC, ord DESC
    )
    INSERT INTO runs AS r (run_id, tenant_id, project_id, phase, role, playbook, status, status_at,
                           attempt, queued_at, started_at, finished_at, tokens_in, tokens_out,
                           cost_usd, error, model, cached, trace_id, artifact_path, artifact_version)
    SELECT a.run_id, a.tenant_id, a.project_id, a.phase, a.role, a.playbook,
           COALESCE(s.status, 'running'), COALESCE(s.status_at, a.first_at), a.attempt,
           a.queued_at, a.started_at, a.finished_at, a.tokens_in, a.tokens_out, a.cost_usd,
           f.reason, m.model, a.cached, a.trace_id, x.artifact_path, x.artifact_version
    FROM agg a
    LEFT JOIN status s USING (run_id)
    LEFT JOIN failure f USING (run_id)
    LEFT JOIN model m USING (run_id)
    LEFT JOIN artifact x USING (run_id)
    ORDER BY a.run_id
    ON CONFLICT (run_id) DO UPDATE SET
        playbook = COALESCE(excluded.playbook, r.playbook),
        status = CASE WHEN (run_status_rank(excluded.status), excluded.status_at)
                           >= (run_status_rank(r.status), r.status_at)
                      THEN excluded.status ELSE r.status END,
        status_at = CASE WHEN (run_status_rank(excluded.status), excluded.status_at)
                              >= (run_status_rank(r.status), r.status_at)
                         THEN excluded.status_at ELSE r.status_at END,
        attempt = GREATEST(r.attempt, excluded.attempt),
        queued_at = LEAST(r.queued_at, excluded.queued_at),
        started_at = LEAST(r.started_at, excluded.started_at),
        finished_at = GREATEST(r.finished_at, excluded.finished_at),
        tokens_in = r.tokens_in + excluded.tokens_in,
        tokens_out = r.tokens_out + excluded.tokens_out,
        cost_usd = r.cost_usd + excluded.cost_usd,
        error = COALESCE(excluded.error, r.error),
        model = COALESCE(excluded.model, r.model),
        cached = r.cached OR excluded.cached,
        trace_id = COALESCE(r.trace_id, excluded.trace_id),
        artifact_path = COALESCE(excluded.artifact_path, r.artifact_path),
        artifact_version = COALESCE(excluded.artifact_version, r.artifact_version),
        updated_at = now()
    WHERE r.tenant_id = excluded.tenant_id;

    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < (SELECT count(DISTINCT run_id) FROM ingest_stage) THEN
        RAISE EXCEPTION 'a run of this batch was created by another tenant meanwhile'
            USING ERRCODE = 'RL001';
    END IF;
END
$fn$;

-- Step: count failures, deduplicated by run and reason.
CREATE FUNCTION ingest_apply_failures() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO failures AS f (run_id, tenant_id, project_id, phase, role, kind, reason,
                               artifact_ref, trace_id, first_seen, last_seen, count)
    SELECT run_id,
           min(tenant_id), min(project_id), min(phase), min(role), min(type), payload->>'reason',
           (array_agg(CASE WHEN artifact_version IS NOT NULL
                           THEN artifact_path || '@' || artifact_version ELSE artifact_path END
                      ORDER BY ord) FILTER (WHERE artifact_path IS NOT NULL))[1],
           (array_agg(trace_id ORDER BY ord) FILTER (WHERE trace_id IS NOT NULL))[1],
           min(occurred_at), max(occurred_at), count(*)
    FROM ingest_stage WHERE type IN ('run_failed', 'validation_failed')
    GROUP BY run_id, payload->>'reason' ORDER BY run_id, payload->>'reason'
    ON CONFLICT (run_id, reason) DO UPDATE SET
        first_seen = LEAST(f.first_seen, excluded.first_seen),
        last_seen = GREATEST(f.last_seen, excluded.last_seen),
        count = f.count + excluded.count,
        artifact_ref = COALESCE(excluded.artifact_ref, f.artifact_ref),
        trace_id = COALESCE(f.trace_id, excluded.trace_id);
END
$fn$;

-- Step: record proofs requested and completed.
CREATE FUNCTION ingest_apply_proofs() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    -- A completion may arrive before its request: the row is created from whichever comes
    -- first, and the request's times replace the placeholders.
    INSERT INTO proofs AS p (proof_id, tenant_id, project_id, requested_at, due_at)
    SELECT DISTINCT ON (payload->>'proof_id') payload->>'proof_id', tenant_id, project_id,
           occurred_at, (payload->>'due_at')::timestamptz
    FROM ingest_stage WHERE type = 'proof_requested' ORDER BY payload->>'proof_id', ord DESC
    ON CONFLICT (proof_id) DO UPDATE SET requested_at = excluded.requested_at,
                                         due_at = excluded.due_at
    WHERE p.tenant_id = excluded.tenant_id;

    INSERT INTO proofs AS p (proof_id, tenant_id, project_id, requested_at, due_at, completed_at,
                             approved)
    SELECT DISTINCT ON (payload->>'proof_id') payload->>'proof_id', tenant_id, project_id,
           occurred_at, occurred_at, occurred_at, COALESCE((payload->>'approved')::boolean, true)
    FROM ingest_stage WHERE type = 'proof_completed' ORDER BY payload->>'proof_id', ord DESC
    ON CONFLICT (proof_id) DO UPDATE SET completed_at = excluded.completed_at,
                                         approved = excluded.approved
    WHERE p.tenant_id = excluded.tenant_id;
END
$fn$;

-- Step: take the ingest lock (held to commit, so events.seq order is commit order) and
-- insert the events; RL002 when some are already stored. Every step after this one runs
-- under the lock, so keep them short.
CREATE FUNCTION ingest_insert_events() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(ingest_lock_key());

    -- No ORDER BY: the batch commits at once, so the order of seq within it carries no
    -- meaning, and sorting cost more than it gave. The exception block is one
    -- subtransaction per batch.
    BEGIN
        INSERT INTO events (event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload)
        SELECT event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload
        FROM ingest_stage;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'some of these events are already stored' USING ERRCODE = 'RL002';
    END;
END
$fn$;

-- Step (after ingest_apply_leases): add the batch's spend to its tenants' days and mark the
-- days whose spend reached the cap in force. Under the ingest lock: these rows are hot.
CREATE FUNCTION ingest_apply_caps() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO caps AS c (tenant_id, date, daily_cap_usd, spent_usd)
    SELECT s.tenant_id, s.day, t.daily_cap_usd, s.spent
    FROM (SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, sum(cost_usd) AS spent
          FROM ingest_stage WHERE cost_usd > 0 GROUP BY 1, 2) s
    JOIN tenants t USING (tenant_id)
    ORDER BY s.tenant_id, s.day
    ON CONFLICT (tenant_id, date) DO UPDATE SET
        spent_usd = c.spent_usd + excluded.spent_usd,
        updated_at = now();

    UPDATE caps c SET blocked = cap_blocked(c)
    FROM (SELECT DISTINCT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day
          FROM ingest_stage WHERE cost_usd > 0) s
    WHERE c.tenant_id = s.tenant_id AND c.date = s.day AND c.blocked <> cap_blocked(c);
END
$fn$;
