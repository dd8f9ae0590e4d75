-- runledger schema, version 4: ingest marks a day blocked by the same measure the lease API
-- enforces (docs/caps.md): spend = settled + ledger spend - the ledger spend already settled
-- through leases, against the cap in force (base cap or an unexpired temporary raise).
CREATE OR REPLACE FUNCTION cap_blocked(c caps) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT c.settled_usd + c.spent_usd - c.leased_spent_usd
           >= COALESCE(cap_effective_usd(c.tenant_id, now()), c.daily_cap_usd)
$$;
