-- Ingest: the same effects and guarantees for less work per event (bench/ingest.py, docs/benchmarks.md).
--
-- 1. Ownership is checked where it is enforced. A batch's first attempt no longer runs
--    ingest_drop_foreign: the projects and runs steps already raise RL001 when a project or
--    run of the batch belongs to another tenant, and an unknown tenant fails their foreign
--    keys (23503). The Ingestor retries either with check_stored, which runs
--    ingest_drop_foreign first and answers the foreign events one by one, as before. A
--    batch that names only its own rows (every agent's) skips a join per event.
-- 2. Projects a batch leaves as they are are neither rewritten nor locked. The upsert's
--    ON CONFLICT DO UPDATE locked every known project of the batch until commit, even when
--    its WHERE skipped the rewrite, so concurrent batches of one tenant queued for each
--    other's project rows. Known projects are now updated only where the batch changes them;
--    only new ones are inserted, with the old merge for one created meanwhile.
-- 3. Steps that have nothing to do are skipped: failures, proofs and leases run only for
--    batches that hold such events (one scan of the batch finds out for all three); the runs,
--    projects and caps steps no longer read the batch a second time to count runs, check
--    owners or list the days they changed.
-- 4. Each run's latest values come from one sorted pass. ingest_apply_runs found a run's
--    latest status, failure reason, model and artifact with four DISTINCT ON look-ups, one
--    sort each. Since PostgreSQL 16 the planner sorts a group's input once for every ordered
--    aggregate that shares one ORDER BY, so the same values now come from ordered aggregates
--    over one sort by (run_id, occurred_at DESC, ord DESC). The status needs no look-up of
--    its own: a terminal event outranks running, which outranks queued, so a run's status is
--    its latest terminal event's, else running when it started, else queued; its time is the
--    latest event of that rank. tests/store/test_ingest_runs.py checks the rule.
-- 5. runs and failures no longer have a foreign key to tenants. Ingest inserts such rows in
--    every batch, and each insert's key check took a share lock on its tenant's row; with
--    batches of the same tenants in parallel those locks became multixacts: 1.4% of the
--    service's CPU per ingested event in an interleaved A/B of bench/ingest.py's workload
--    (docs/benchmarks.md). What the keys guaranteed still holds: ingest_insert_events checks, under the
--    ingest lock, that every tenant of the batch exists (23503 otherwise, as the key
--    raised), and deleting a tenant deletes its runs and failures (as ON DELETE CASCADE
--    did) after taking the ingest lock, so a batch of the tenant either commits before and
--    is deleted with it, or sees the tenant gone and is refused.

CREATE OR REPLACE FUNCTION ingest_batch(batch json, check_stored boolean DEFAULT false)
    RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
DECLARE
    has_failures boolean;
    has_proofs   boolean;
    has_leases   boolean;
BEGIN
    PERFORM ingest_stage_batch(batch);
    IF check_stored THEN
        RETURN QUERY SELECT * FROM ingest_drop_foreign();
        RETURN QUERY SELECT * FROM ingest_drop_stored();
        IF NOT EXISTS (SELECT 1 FROM ingest_stage) THEN
            RETURN;
        END IF;
    END IF;
    SELECT bool_or(s.type IN ('run_failed', 'validation_failed')),
           bool_or(s.type IN ('proof_requested', 'proof_completed')),
           bool_or(s.cost_usd > 0 AND s.payload ? 'lease_id')
      INTO has_failures, has_proofs, has_leases FROM ingest_stage s;
    PERFORM ingest_apply_projects();
    PERFORM ingest_apply_runs();
    IF has_failures THEN
        PERFORM ingest_apply_failures();
    END IF;
    IF has_proofs THEN
        PERFORM ingest_apply_proofs();
    END IF;
    PERFORM ingest_insert_events();
    IF has_leases THEN
        PERFORM ingest_apply_leases();
    END IF;
    PERFORM ingest_apply_caps();
END
$fn$;

ALTER TABLE runs DROP CONSTRAINT runs_tenant_id_fkey;
ALTER TABLE failures DROP CONSTRAINT failures_tenant_id_fkey;

-- Deleting a tenant deletes its runs and failures, as the foreign keys' ON DELETE CASCADE
-- did, once no batch is between its tenant check and its commit (the ingest lock).
CREATE FUNCTION tenants_delete_ingested() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(ingest_lock_key());
    DELETE FROM failures WHERE tenant_id = OLD.tenant_id;
    DELETE FROM runs WHERE tenant_id = OLD.tenant_id;
    RETURN OLD;
END
$fn$;
CREATE TRIGGER tenants_delete_ingested AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_delete_ingested();

-- Step: record the events' ids (RL002 when one is already stored), then take the ingest
-- lock (held to commit, so events.seq order is commit order), check that the batch's
-- tenants still exist (what the foreign keys of runs and failures did; 23503 otherwise) and
-- insert the events.
CREATE OR REPLACE FUNCTION ingest_insert_events() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    -- The exception block is one subtransaction per batch.
    BEGIN
        INSERT INTO event_ids (event_id, occurred_at)
        SELECT event_id, occurred_at FROM ingest_stage;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'some of these events are already stored' USING ERRCODE = 'RL002';
    END;

    PERFORM pg_advisory_xact_lock(ingest_lock_key());
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT tenant_id FROM ingest_stage) s
               WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.tenant_id = s.tenant_id)) THEN
        RAISE EXCEPTION 'a tenant of this batch does not exist' USING ERRCODE = '23503';
    END IF;
    -- No ORDER BY: the batch commits at once, so the order of seq within it carries no
    -- meaning, and sorting cost more than it gave.
    INSERT INTO events (event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload)
    SELECT event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload
    FROM ingest_stage;
END
$fn$;

-- Step: create or advance the batch's projects (playbook, current phase, last advance);
-- RL001 when one of them belongs to another tenant (created meanwhile, or on a first
-- attempt, which does not run ingest_drop_foreign).
CREATE OR REPLACE FUNCTION ingest_apply_projects() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    foreign_projects integer;
BEGIN
    WITH agg AS MATERIALIZED (
        SELECT project_id, min(tenant_id) AS tenant_id, max(playbook) AS playbook,
               (array_agg(CASE WHEN type = 'phase_advanced' THEN lower(payload->>'to_phase') ELSE phase END
                          ORDER BY occurred_at DESC, ord DESC)
                    FILTER (WHERE type = 'phase_entered'
                               OR (type = 'phase_advanced' AND payload->>'to_phase' IS NOT NULL)))[1]
                   AS current_phase,
               max(occurred_at) FILTER (WHERE type = 'phase_entered'
                                           OR (type = 'phase_advanced' AND payload->>'to_phase' IS NOT NULL))
                   AS phase_entered_at,
               max(occurred_at) FILTER (WHERE type = 'phase_advanced') AS last_advanced_at
        FROM ingest_stage GROUP BY project_id
    ), known AS MATERIALIZED (
        -- The batch's projects that exist, with their owners (an owner never changes).
        SELECT a.project_id, p.tenant_id AS owner FROM agg a JOIN projects p USING (project_id)
    ), changed AS (
        -- Known projects the batch changes (rare: a phase event, another playbook).
        UPDATE projects p SET
            playbook = COALESCE(a.playbook, p.playbook),
            current_phase = CASE WHEN a.phase_entered_at IS NOT NULL
                                  AND (p.phase_entered_at IS NULL
                                       OR a.phase_entered_at >= p.phase_entered_at)
                                 THEN a.current_phase ELSE p.current_phase END,
            phase_entered_at = GREATEST(p.phase_entered_at, a.phase_entered_at),
            last_advanced_at = GREATEST(p.last_advanced_at, a.last_advanced_at)
        FROM agg a
        WHERE p.project_id = a.project_id AND p.tenant_id = a.tenant_id
          AND ((a.playbook IS NOT NULL AND a.playbook IS DISTINCT FROM p.playbook)
               OR (a.phase_entered_at IS NOT NULL
                   AND (p.phase_entered_at IS NULL OR a.phase_entered_at >= p.phase_entered_at))
               OR (a.last_advanced_at IS NOT NULL
                   AND (p.last_advanced_at IS NULL OR a.last_advanced_at > p.last_advanced_at)))
        RETURNING p.project_id
    ), added AS (
        -- New projects; one another batch created meanwhile is merged as before, when it is
        -- of the same tenant (and so returned), and left alone when it is not.
        INSERT INTO projects AS p (project_id, tenant_id, playbook, current_phase,
                                   phase_entered_at, last_advanced_at)
        SELECT a.project_id, a.tenant_id, a.playbook, a.current_phase, a.phase_entered_at,
               a.last_advanced_at
        FROM agg a
        WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.project_id = a.project_id)
        ORDER BY a.project_id
        ON CONFLICT (project_id) DO UPDATE SET
            playbook = COALESCE(excluded.playbook, p.playbook),
            current_phase = CASE WHEN excluded.phase_entered_at IS NOT NULL
                                  AND (p.phase_entered_at IS NULL
                                       OR excluded.phase_entered_at >= p.phase_entered_at)
                                 THEN excluded.current_phase ELSE p.current_phase END,
            phase_entered_at = GREATEST(p.phase_entered_at, excluded.phase_entered_at),
            last_advanced_at = GREATEST(p.last_advanced_at, excluded.last_advanced_at)
        WHERE p.tenant_id = excluded.tenant_id
        RETURNING p.project_id
    )
    -- Another tenant's: known with another owner, or new to this batch yet not added.
    SELECT (SELECT count(*) FROM known k JOIN agg a USING (project_id) WHERE k.owner <> a.tenant_id)
         + (SELECT count(*) FROM agg a WHERE NOT EXISTS (SELECT 1 FROM known k
                                                         WHERE k.project_id = a.project_id))
         - (SELECT count(*) FROM added)
      INTO foreign_projects;
    IF foreign_projects > 0 THEN
        RAISE EXCEPTION 'a project of this batch belongs to another tenant'
            USING ERRCODE = 'RL001';
    END IF;
END
$fn$;

-- Step: create or update one runs row per run of the batch (status, times, tokens, cost,
-- last model and artifact); RL001 when one of them belongs to another tenant.
CREATE OR REPLACE FUNCTION ingest_apply_runs() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    batch_runs integer;
    written    integer;
BEGIN
    WITH agg AS MATERIALIZED (
    SELECT run_id, tenant_id, project_id, phase, role, playbook,
           CASE WHEN finished_at IS NOT NULL THEN terminal
                WHEN last_started IS NULL AND last_queued IS NOT NULL THEN 'queued'
                ELSE 'running' END AS status,
           COALESCE(finished_at, last_started, last_queued, first_at) AS status_at,
           attempt, queued_at, started_at, finished_at, tokens_in, tokens_out, cost_usd,
           error, model, cached, trace_id, artifact_path, artifact_version
    FROM (
        SELECT run_id,
               min(tenant_id) AS tenant_id, min(project_id) AS project_id, min(phase) AS phase,
               min(role) AS role, max(playbook) AS playbook, max(trace_id) AS trace_id,
               min(occurred_at) AS first_at,
               COALESCE(max(attempt), 1) AS attempt,
               min(occurred_at) FILTER (WHERE type = 'run_queued') AS queued_at,
               max(occurred_at) FILTER (WHERE type = 'run_queued') AS last_queued,
               min(occurred_at) FILTER (WHERE type = 'run_started') AS started_at,
               max(occurred_at) FILTER (WHERE type = 'run_started') AS last_started,
               max(occurred_at) FILTER (WHERE type IN ('run_finished', 'run_failed')) AS finished_at,
               sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
               sum(cost_usd) AS cost_usd,
               bool_or(cached) AS cached,
               (array_agg(CASE WHEN type = 'run_finished' THEN COALESCE(payload->>'status', 'succeeded')
                               ELSE 'failed' END ORDER BY occurred_at DESC, ord DESC)
                    FILTER (WHERE type IN ('run_finished', 'run_failed')))[1] AS terminal,
               (array_agg(payload->>'reason' ORDER BY occurred_at DESC, ord DESC)
                    FILTER (WHERE type = 'run_failed'))[1] AS error,
               (array_agg(model ORDER BY occurred_at DESC, ord DESC)
                    FILTER (WHERE model IS NOT NULL))[1] AS model,
               (array_agg(artifact_path ORDER BY occurred_at DESC, ord DESC)
                    FILTER (WHERE artifact_path IS NOT NULL))[1] AS artifact_path,
               (array_agg(artifact_version ORDER BY occurred_at DESC, ord DESC)
                    FILTER (WHERE artifact_path IS NOT NULL))[1] AS artifact_version
        FROM ingest_stage GROUP BY run_id
    ) a
    ), upserted AS (
    INSERT INTO runs AS r (run_id, tenant_id, project_id, phase, role, playbook, status, status_at,
                           attempt, queued_at, started_at, finished_at, tokens_in, tokens_out,
                           cost_usd, error, model, cached, trace_id, artifact_path, artifact_version)
    SELECT * FROM agg
    ORDER BY run_id
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
    WHERE r.tenant_id = excluded.tenant_id
    RETURNING 1
    )
    -- A run of another tenant is neither inserted nor updated, so not returned.
    SELECT (SELECT count(*) FROM agg), (SELECT count(*) FROM upserted) INTO batch_runs, written;
    IF written < batch_runs THEN
        RAISE EXCEPTION 'a run of this batch belongs to another tenant'
            USING ERRCODE = 'RL001';
    END IF;
END
$fn$;

-- Step (after ingest_apply_leases): add the batch's spend to its tenants' days and mark the
-- days whose spend reached the cap in force. Under the ingest lock: these rows are hot. The
-- days come back from the upsert, rather than from a second pass over the batch, and each
-- day's cap in force is looked up once.
CREATE OR REPLACE FUNCTION ingest_apply_caps() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    day_tenants text[];
    day_dates   date[];
BEGIN
    WITH spent AS (
        INSERT INTO caps AS c (tenant_id, date, daily_cap_usd, spent_usd)
        SELECT s.tenant_id, s.day, t.daily_cap_usd, s.spent
        FROM (SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day,
                     sum(cost_usd) AS spent
              FROM ingest_stage WHERE cost_usd > 0 GROUP BY 1, 2) s
        JOIN tenants t USING (tenant_id)
        ORDER BY s.tenant_id, s.day
        ON CONFLICT (tenant_id, date) DO UPDATE SET
            spent_usd = c.spent_usd + excluded.spent_usd,
            updated_at = now()
        RETURNING c.tenant_id, c.date
    )
    SELECT array_agg(tenant_id), array_agg(date) INTO day_tenants, day_dates FROM spent;

    UPDATE caps c SET blocked = x.now_blocked
    FROM (SELECT d.tenant_id, d.date, cap_blocked(d) AS now_blocked
          FROM caps d JOIN unnest(day_tenants, day_dates) AS s(tenant_id, day)
            ON d.tenant_id = s.tenant_id AND d.date = s.day) x
    WHERE c.tenant_id = x.tenant_id AND c.date = x.date AND c.blocked <> x.now_blocked;
END
$fn$;
