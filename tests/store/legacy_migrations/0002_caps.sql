-- runledger schema, version 2: budget leases against the tenant daily cap. docs/caps.md
-- explains the design; in short, for one (tenant, UTC day) row of caps:
--
--   spend     = settled_usd + spent_usd - leased_spent_usd
--   committed = spend + reserved_usd            (never above the effective cap)
--
-- settled_usd is spend reported through leases; spent_usd stays the ledger record (every
-- event's cost_usd, maintained by ingest); leased_spent_usd is the part of spent_usd whose
-- events name an open or closed lease (payload.lease_id), already in settled_usd, so no
-- dollar is counted twice. reserved_usd is what open leases hold and have not yet spent.

ALTER TABLE caps
    ADD COLUMN reserved_usd      numeric(20, 9) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    ADD COLUMN settled_usd       numeric(20, 9) NOT NULL DEFAULT 0,
    ADD COLUMN leased_spent_usd  numeric(20, 9) NOT NULL DEFAULT 0,
    ADD COLUMN warned_at         timestamptz,
    ADD COLUMN blocked_at        timestamptz;

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
       c.settled_usd + c.spent_usd - c.leased_spent_usd AS spend_usd,
       c.reserved_usd,
       CASE WHEN c.daily_cap_usd > 0
            THEN (c.settled_usd + c.spent_usd - c.leased_spent_usd) / c.daily_cap_usd END
           AS utilisation,
       c.settled_usd + c.spent_usd - c.leased_spent_usd >= 0.8 * c.daily_cap_usd AS at_80,
       c.settled_usd + c.spent_usd - c.leased_spent_usd >= c.daily_cap_usd AS at_100,
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
        WHEN p_cap - (c.settled_usd + c.spent_usd - c.leased_spent_usd) - c.reserved_usd < p_min
            THEN NULL
        ELSE LEAST(
            p_want,
            GREATEST(p_min, trunc((p_cap - (c.settled_usd + c.spent_usd - c.leased_spent_usd)
                                   - c.reserved_usd) / p_divisor, 9)),
            p_cap - (c.settled_usd + c.spent_usd - c.leased_spent_usd) - c.reserved_usd)
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
    UPDATE caps SET
        warned_at = COALESCE(warned_at, CASE
            WHEN settled_usd + spent_usd - leased_spent_usd + reserved_usd >= 0.8 * p_cap
            THEN p_now END),
        blocked = CASE WHEN p_blocked THEN true
                       ELSE settled_usd + spent_usd - leased_spent_usd >= p_cap END,
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
                   c.settled_usd + c.spent_usd - c.leased_spent_usd, c.reserved_usd)::cap_lease_result;
    END IF;
    g := _cap_grant(c, v_cap, p_want, p_min, p_divisor);
    IF g IS NULL THEN
        -- Blocked only when even every other lease giving back all it holds would not make
        -- room: otherwise the room exists but is held, and the caller retries (no phantom
        -- refusal).
        v_blocked := c.settled_usd + c.spent_usd - c.leased_spent_usd + p_min > v_cap;
        c := _cap_marks(p_tenant, v_day, v_cap, v_now, v_blocked);
        RETURN ROW(CASE WHEN v_blocked THEN 'blocked' ELSE 'contended' END,
                   NULL, p_tenant, v_day, 0, 0, NULL, v_cap,
                   c.settled_usd + c.spent_usd - c.leased_spent_usd, c.reserved_usd)::cap_lease_result;
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
               c.settled_usd + c.spent_usd - c.leased_spent_usd, c.reserved_usd)::cap_lease_result;
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
                v_blocked := c.settled_usd + c.spent_usd - c.leased_spent_usd + l.reserved_usd
                             + p_min > v_cap;
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
               c.settled_usd + c.spent_usd - c.leased_spent_usd, c.reserved_usd)::cap_lease_result;
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
CREATE OR REPLACE FUNCTION ingest_apply_leases() RETURNS void LANGUAGE plpgsql AS $$
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
