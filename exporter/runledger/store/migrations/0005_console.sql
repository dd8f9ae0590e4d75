-- The console (docs/console.md): login sessions, the key that signs embed links and CSRF
-- tokens, rerun requests for Coordinators, and the per-tenant switch that shows owners raw
-- token counts. Applies on top of 0001-0003 alone.

-- Owners see dollars and time; raw token counts only when an admin turns this on (audited).
ALTER TABLE tenants ADD COLUMN owner_sees_tokens boolean NOT NULL DEFAULT false;

-- Signing keys shared by every worker of the control service (one row per purpose). The
-- first worker to start inserts a random key; RUNLEDGER_CONSOLE_SECRET overrides it.
CREATE TABLE console_keys (
    name             text PRIMARY KEY,
    secret           bytea NOT NULL CHECK (length(secret) >= 32),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Console login sessions. Only a SHA-256 of the session id is stored; the session acts as
-- the token it was opened with, so revoking that token ends the session.
CREATE TABLE console_sessions (
    session_sha256   bytea PRIMARY KEY,
    token_sha256     bytea NOT NULL REFERENCES api_tokens ON DELETE CASCADE,
    csrf_token       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    -- Support impersonating an owner: the tenant, why, and since when (audited).
    impersonating    text REFERENCES tenants ON DELETE SET NULL,
    impersonation_reason text,
    impersonation_started_at timestamptz
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at) WHERE ended_at IS NULL;

-- "Rerun the last step": an admin asks, a Coordinator of the tenant claims it through the
-- SDK (Ledger.claim_rerun) and starts the new run with the id assigned here.
CREATE TABLE rerun_requests (
    request_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           text NOT NULL,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    project_id       text NOT NULL,
    phase            text NOT NULL,
    role             text NOT NULL,
    playbook         text,
    attempt          integer NOT NULL,
    reason           text NOT NULL CHECK (length(btrim(reason)) > 0),
    requested_by     text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed')),
    claimed_by       text,
    claimed_at       timestamptz,
    new_run_id       text
);
-- One open request per run: asking twice answers the open one.
CREATE UNIQUE INDEX rerun_requests_open ON rerun_requests (run_id) WHERE status = 'pending';
CREATE INDEX rerun_requests_tenant ON rerun_requests (tenant_id, requested_at)
    WHERE status = 'pending';
CREATE INDEX rerun_requests_run ON rerun_requests (run_id);
