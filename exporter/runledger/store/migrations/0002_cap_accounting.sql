-- Cap accounting that holds against dead holders, stale lease tags and its own flag
-- (docs/caps.md):
--
-- * A lease nets its events out of the cap's spend only up to what it settled or still
--   holds: cap_leases.netted_usd = LEAST(ledger_spent_usd, spent_usd + reserved_usd), kept
--   current by ingest and by every lease operation. Anything beyond counts as spend.
-- * A lease whose holder stopped renewing it (heartbeats) expires, but its holding stays
--   reserved for one more lifetime (the grace), while its holder's spooled events arrive.
--   Then it keeps what the holder reported as spent or in flight (inflight_usd, sent with
--   every renewal) and what its events show beyond its report, and releases the rest.
-- * caps.blocked means: a request was refused today (blocked_need_usd, the smallest need
--   refused) and nothing since freed that much, or the spend reached the cap in force.

ALTER TABLE cap_leases
    ADD COLUMN netted_usd   numeric(20, 9) NOT NULL DEFAULT 0,
    ADD COLUMN inflight_usd numeric(20, 9) CHECK (inflight_usd >= 0);
-- Before this migration ingest netted every event of a lease that was not expired.
UPDATE cap_leases SET netted_usd = ledger_spent_usd;
CREATE INDEX cap_leases_held ON cap_leases (tenant_id, expires_at)
    WHERE status = 'expired' AND reserved_usd > 0;

ALTER TABLE caps ADD COLUMN blocked_need_usd numeric(20, 9);

-- What a lease may net out of its day's spend: its events, up to what it settled (spent_usd)
-- or still holds for its holder (reserved_usd). The rest of its events count as spend.
CREATE FUNCTION cap_lease_nettable(l cap_leases) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT LEAST(l.ledger_spent_usd, l.spent_usd + l.reserved_usd) $$;

-- Bring one lease's netting up to date after its spend, holding or events changed. The
-- caller holds the lease row; the lease's day row of caps is updated (locked) here.
CREATE FUNCTION _cap_lease_renet(p_lease text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    l       cap_leases;
    v_delta numeric;
BEGIN
    SELECT * INTO l FROM cap_leases WHERE lease_id = p_lease;
    v_delta := cap_lease_nettable(l) - l.netted_usd;
    IF v_delta <> 0 THEN
        UPDATE caps SET leased_spent_usd = leased_spent_usd + v_delta
         WHERE tenant_id = l.tenant_id AND date = l.date;
        UPDATE cap_leases SET netted_usd = netted_usd + v_delta WHERE lease_id = p_lease;
    END IF;
END $$;

-- Whether a day is blocked under the cap p_cap: its spend reached the cap, or a request was
-- refused (blocked_need_usd) and the free room is still smaller than what it needed.
CREATE FUNCTION cap_blocked_under(c caps, p_cap numeric) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT cap_spend_usd(c) >= p_cap
        OR COALESCE(p_cap - cap_spend_usd(c) - c.reserved_usd < c.blocked_need_usd, false)
$$;

-- Ingest's measure (the cap in force now), the same definition.
CREATE OR REPLACE FUNCTION cap_blocked(c caps) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT cap_blocked_under(c, COALESCE(cap_effective_usd(c.tenant_id, now()), c.daily_cap_usd))
$$;

-- Mark 80% and refusals on the row, as data for owners and alerts. p_refused is the need of
-- a request refused now (NULL: none); the mark clears once the free room covers the
-- smallest need refused.
DROP FUNCTION _cap_marks(text, date, numeric, timestamptz, boolean);
CREATE FUNCTION _cap_marks(p_tenant text, p_day date, p_cap numeric, p_now timestamptz,
                           p_refused numeric) RETURNS caps LANGUAGE plpgsql AS $$
DECLARE
    c caps;
BEGIN
    UPDATE caps u SET
        warned_at = COALESCE(warned_at, CASE
            WHEN cap_spend_usd(u) + reserved_usd >= 0.8 * p_cap THEN p_now END),
        blocked_need_usd = CASE
            WHEN p_refused IS NOT NULL THEN LEAST(COALESCE(blocked_need_usd, p_refused), p_refused)
            WHEN cap_blocked_under(u, p_cap) THEN blocked_need_usd END,
        blocked = p_refused IS NOT NULL OR cap_blocked_under(u, p_cap),
        blocked_at = CASE WHEN p_refused IS NOT NULL THEN COALESCE(blocked_at, p_now)
                          ELSE blocked_at END,
        updated_at = now()
     WHERE tenant_id = p_tenant AND date = p_day RETURNING * INTO c;
    RETURN c;
END $$;

CREATE OR REPLACE FUNCTION cap_lease_open(p_tenant text, p_want numeric, p_min numeric,
                                          p_holder text, p_role text, p_ttl_s double precision,
                                          p_divisor integer, p_now timestamptz)
    RETURNS cap_lease_result LANGUAGE plpgsql AS $$
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
        c := _cap_marks(p_tenant, v_day, v_cap, v_now, CASE WHEN v_blocked THEN p_min END);
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
    c := _cap_marks(p_tenant, v_day, v_cap, v_now, NULL);
    RETURN ROW('granted', l.lease_id, p_tenant, v_day, g, l.reserved_usd, l.expires_at, v_cap,
               cap_spend_usd(c), c.reserved_usd)::cap_lease_result;
END $$;

-- Report a lease's cumulative spend (settling it) and the estimates of its holder's calls in
-- flight (p_keep, kept as inflight_usd for reclaim), renew it, then top it up by up to
-- p_want, or close it (p_close) returning whatever it still holds. p_tenant, when given,
-- must own the lease. When a top-up fails the lease keeps at most p_keep and gives the rest
-- back: two runs each holding a little while waiting for the other's share would otherwise
-- wait on each other until the lease expires.
CREATE OR REPLACE FUNCTION cap_lease_sync(p_lease text, p_tenant text, p_spent_total numeric,
                                          p_want numeric, p_min numeric,
                                          p_ttl_s double precision, p_divisor integer,
                                          p_close boolean, p_now timestamptz, p_keep numeric)
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
    l.inflight_usd := COALESCE(p_keep, l.inflight_usd);
    v_status := 'settled';
    IF p_close THEN
        l.status := 'closed';
        l.closed_at := v_now;
        l.inflight_usd := 0;
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
                          inflight_usd = l.inflight_usd, renewed_at = l.renewed_at,
                          expires_at = l.expires_at
     WHERE lease_id = l.lease_id;
    PERFORM _cap_lease_renet(l.lease_id);
    c := _cap_marks(l.tenant_id, l.date, v_cap, v_now,
                    CASE WHEN v_status = 'blocked' THEN p_min END);
    RETURN ROW(v_status, l.lease_id, l.tenant_id, l.date, g, l.reserved_usd, l.expires_at, v_cap,
               cap_spend_usd(c), c.reserved_usd)::cap_lease_result;
END $$;

-- When an expired lease's grace ends: one more lifetime (expires_at - renewed_at, the ttl
-- its holder last asked for) after it expired.
CREATE FUNCTION cap_lease_grace_end(l cap_leases) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT l.expires_at + (l.expires_at - l.renewed_at) $$;

-- Reclaim the leases of one tenant whose holders stopped renewing them, in two steps:
-- * expired (no renewal for a lifetime): the holder is taken for dead and its late reports
--   are refused, but its holding stays reserved through the grace, covering the events
--   its spool may still deliver;
-- * grace over: settle what the holder reported in flight and what its events show beyond
--   its report, and give back the rest (what was never drawn, as far as the ledger knows).
-- One tenant per call keeps lock order (leases, then that tenant's caps rows) the same as
-- ingest's, so the two cannot deadlock. Returns the number of leases expired or released.
CREATE OR REPLACE FUNCTION cap_leases_reclaim(p_tenant text, p_now timestamptz) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := COALESCE(p_now, now());
    v_keep numeric;
    l      cap_leases;
    n      integer := 0;
BEGIN
    FOR l IN SELECT * FROM cap_leases
              WHERE tenant_id = p_tenant AND expires_at <= v_now
                AND (status = 'open'
                     OR (status = 'expired' AND reserved_usd > 0
                         AND cap_lease_grace_end(cap_leases) <= v_now))
              ORDER BY lease_id FOR UPDATE
    LOOP
        n := n + 1;
        IF l.status = 'open' THEN
            UPDATE cap_leases SET status = 'expired', closed_at = v_now
             WHERE lease_id = l.lease_id;
            CONTINUE WHEN cap_lease_grace_end(l) > v_now;
        END IF;
        v_keep := COALESCE(l.inflight_usd, 0) + GREATEST(l.ledger_spent_usd - l.spent_usd, 0);
        UPDATE caps SET settled_usd = settled_usd + v_keep,
                        reserved_usd = reserved_usd - l.reserved_usd
         WHERE tenant_id = l.tenant_id AND date = l.date;
        UPDATE cap_leases SET reserved_usd = 0, spent_usd = spent_usd + v_keep, inflight_usd = 0
         WHERE lease_id = l.lease_id;
        PERFORM _cap_lease_renet(l.lease_id);
    END LOOP;
    RETURN n;
END $$;

-- Ingest side (called by ingest_batch on the accepted events of a batch): count the cost of
-- events naming a lease of their tenant in that lease's ledger_spent_usd, and net it out of
-- the lease's day (leased_spent_usd) as far as the lease settled or still holds it
-- (cap_lease_nettable): the rest counts through spent_usd like any event's cost.
CREATE OR REPLACE FUNCTION ingest_apply_leases() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ingest_stage n WHERE n.cost_usd > 0 AND n.payload ? 'lease_id')
    THEN
        RETURN;
    END IF;
    -- Lock the named leases first (same order as reclaim) so the values read below are final.
    PERFORM 1 FROM cap_leases l
      WHERE l.lease_id IN (SELECT n.payload->>'lease_id' FROM ingest_stage n
                            WHERE n.cost_usd > 0 AND n.payload ? 'lease_id')
      ORDER BY l.lease_id FOR UPDATE OF l;
    WITH tagged AS (
        SELECT l.lease_id, l.tenant_id, l.date, s.cost,
               LEAST(l.ledger_spent_usd + s.cost, l.spent_usd + l.reserved_usd)
                   - l.netted_usd AS delta
          FROM (SELECT n.payload->>'lease_id' AS lease_id, n.tenant_id, sum(n.cost_usd) AS cost
                  FROM ingest_stage n
                 WHERE n.cost_usd > 0 AND n.payload ? 'lease_id'
                 GROUP BY 1, 2) s
          JOIN cap_leases l ON l.lease_id = s.lease_id AND l.tenant_id = s.tenant_id
    ), per_lease AS (
        UPDATE cap_leases l SET ledger_spent_usd = l.ledger_spent_usd + t.cost,
                                netted_usd = l.netted_usd + t.delta
          FROM tagged t
         WHERE l.lease_id = t.lease_id
    )
    UPDATE caps c SET leased_spent_usd = c.leased_spent_usd + d.delta
      FROM (SELECT tenant_id, date, sum(delta) AS delta FROM tagged GROUP BY 1, 2) d
     WHERE c.tenant_id = d.tenant_id AND c.date = d.date AND d.delta <> 0;
END $$;
