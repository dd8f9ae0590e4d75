-- Event identity: an event_id is stored at most once, whatever its occurred_at.
--
-- events is partitioned by UTC day of occurred_at, so a unique index on it must include
-- occurred_at: the same event_id re-sent with another time (re-stamped by a client, or a
-- time PostgreSQL rounded where validation truncated) was stored twice. event_ids holds the
-- id of every stored event once. Ingest inserts into it in the transaction that inserts the
-- events, and retention deletes the ids of each day partition it drops, in the same
-- transaction, so an id is in event_ids exactly while its event is in events.
CREATE TABLE event_ids (
    event_id    uuid PRIMARY KEY,
    occurred_at timestamptz NOT NULL
);
-- For retention's delete of a dropped day. Ids arrive roughly in time order, so a BRIN
-- index finds a day's rows while costing ingest next to nothing.
CREATE INDEX event_ids_occurred ON event_ids USING brin (occurred_at);

-- Events stored before this migration (an id stored twice keeps its first time).
INSERT INTO event_ids (event_id, occurred_at)
SELECT DISTINCT ON (event_id) event_id, occurred_at FROM events ORDER BY event_id, occurred_at;

-- event_ids' primary key now refuses a stored event: this index would only cost ingest.
DROP INDEX events_event_id;

-- Step, with check_stored only (the retry): drop (and return) the events whose id is
-- already stored, whatever the time they were stored with; then those whose cost the
-- ledger cannot add up (ingest_drop_overflow). Called from here rather than from
-- ingest_batch, which this migration leaves as the baseline wrote it.
CREATE OR REPLACE FUNCTION ingest_drop_stored() RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    ANALYZE ingest_stage;  -- a temporary table has no statistics: plan index probes
    RETURN QUERY
        DELETE FROM ingest_stage s
        WHERE EXISTS (SELECT 1 FROM event_ids e WHERE e.event_id = s.event_id)
        RETURNING s.ord, 'duplicate'::text;
    RETURN QUERY SELECT * FROM ingest_drop_overflow();
END
$fn$;

-- Step, with check_stored only (called by ingest_drop_stored): drop (and return) the
-- events whose cost would take a sum past what numeric(20, 9) holds: their run's cost_usd
-- ('run_cost'), their tenant's day spend in caps ('day_cost'), or the ledger spend of the
-- lease they name ('lease_cost').
-- The first attempt of a batch skips this step; a sum that overflows there raises 22003,
-- and the Ingestor retries the batch with check_stored. Within a run, day or lease the
-- events count in batch order: the one that crosses the limit and every later one with a
-- cost is dropped.
CREATE FUNCTION ingest_drop_overflow() RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        WITH total AS (
            SELECT s.ord, COALESCE(r.cost_usd, 0)
                          + sum(s.cost_usd) OVER (PARTITION BY s.run_id ORDER BY s.ord) AS usd
            FROM ingest_stage s LEFT JOIN runs r ON r.run_id = s.run_id
            WHERE s.cost_usd > 0
        )
        DELETE FROM ingest_stage s USING total t
        WHERE s.ord = t.ord AND t.usd > 99999999999.999999999
        RETURNING s.ord, 'run_cost'::text;
    RETURN QUERY
        WITH total AS (
            SELECT s.ord, COALESCE(c.spent_usd, 0)
                          + sum(s.cost_usd) OVER (PARTITION BY s.tenant_id, s.day ORDER BY s.ord) AS usd
            FROM (SELECT *, (occurred_at AT TIME ZONE 'UTC')::date AS day FROM ingest_stage
                  WHERE cost_usd > 0) s
            LEFT JOIN caps c ON c.tenant_id = s.tenant_id AND c.date = s.day
        )
        DELETE FROM ingest_stage s USING total t
        WHERE s.ord = t.ord AND t.usd > 99999999999.999999999
        RETURNING s.ord, 'day_cost'::text;
    RETURN QUERY
        WITH total AS (
            SELECT s.ord, l.ledger_spent_usd
                          + sum(s.cost_usd) OVER (PARTITION BY l.lease_id ORDER BY s.ord) AS usd
            FROM ingest_stage s
            JOIN cap_leases l ON l.lease_id = s.payload->>'lease_id' AND l.tenant_id = s.tenant_id
            WHERE s.cost_usd > 0 AND s.payload ? 'lease_id' AND l.status <> 'expired'
        )
        DELETE FROM ingest_stage s USING total t
        WHERE s.ord = t.ord AND t.usd > 99999999999.999999999
        RETURNING s.ord, 'lease_cost'::text;
END
$fn$;

-- Step: record the events' ids (RL002 when one is already stored), then take the ingest
-- lock (held to commit, so events.seq order is commit order) and insert the events.
-- The ids go in before the lock, so that batches do not queue for it while they do: a
-- batch holding one of the ids uncommitted makes the other wait for its commit and then
-- fail the primary key, as it would under the lock (two re-sent batches crossing each
-- other's ids deadlock instead, which is retried the same way).
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
    -- No ORDER BY: the batch commits at once, so the order of seq within it carries no
    -- meaning, and sorting cost more than it gave.
    INSERT INTO events (event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload)
    SELECT event_id, type, tenant_id, project_id, run_id, phase, role, playbook, occurred_at, tokens_in, tokens_out, cost_usd, model, cached, artifact_path, artifact_version, attempt, trace_id, span_id, payload
    FROM ingest_stage;
END
$fn$;
