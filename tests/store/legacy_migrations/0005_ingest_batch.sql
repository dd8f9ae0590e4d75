-- runledger schema, version 5: ingest_batch, which writes a batch of events and all their
-- effects in the caller's transaction. (Databases made before this version had an earlier
-- definition from 0001; this one replaces it.) Changes from that definition, measured with
-- bench/ingest.py and explained in docs/benchmarks.md:
--   * events are inserted by a plain INSERT: an event already stored fails its unique index
--     and is re-raised as RL002, instead of each row paying for ON CONFLICT's speculative
--     insertion;
--   * a project whose row would not change is not rewritten;
--   * the runs upsert reads the staged events directly instead of through a materialised CTE.

-- Ingest one validated batch in the caller's transaction: a JSON array of events as
-- runledger.events serialises them, or the request body {"events": [...]} as received when
-- every event in it passed validation (names are lower-cased here as validation does).
-- Returns one row per event that was not accepted: (ord, 'tenant' | 'project' | 'run' |
-- 'duplicate'), ord being its position in the array.
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
CREATE OR REPLACE FUNCTION ingest_batch(batch json, check_stored boolean DEFAULT false)
    RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    staged integer;
    written integer;
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
    GET DIAGNOSTICS staged = ROW_COUNT;

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
        SELECT count(*) INTO staged FROM ingest_stage;
    END IF;

    -- Events already stored (a re-send) are found when the events are inserted, under the
    -- lock: the batch is then rolled back (RL002) and retried with check_stored, which drops
    -- them here, before any effect can count them again. Re-sends are rare, so the common
    -- batch does not pay for the look-up.
    IF check_stored THEN
        ANALYZE ingest_stage;  -- a temporary table has no statistics: plan index probes
        RETURN QUERY
            DELETE FROM ingest_stage s
            WHERE EXISTS (SELECT 1 FROM events e
                          WHERE e.event_id = s.event_id AND e.occurred_at = s.occurred_at)
            RETURNING s.ord, 'duplicate'::text;
        GET DIAGNOSTICS written = ROW_COUNT;
        staged := staged - written;
        IF staged = 0 THEN
            RETURN;
        END IF;
    END IF;

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

    PERFORM pg_advisory_xact_lock(8247619704503297907);

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

    PERFORM ingest_apply_leases();

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
