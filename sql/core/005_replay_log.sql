-- thorbis-cache core 005: the worker's recent invalidations, replayed after a Redis
-- failover or restart lost writes the old master had acknowledged.
--
-- The worker appends one row per tenant per batch, in the transaction that claims the
-- batch's outbox rows, and writes the row's id to the tenant's marker in Redis
-- (`<prefix>:~applied:{tenant}`, in the tenant's slot, after the batch's deletes). A
-- marker found lower than the worker wrote it (or missing) on a new master proves
-- that writes were lost; the rows after it are applied again. Rows older than the
-- worker's replay window are pruned (docs/architecture.md, "Failover").

CREATE TABLE IF NOT EXISTS thorbis.invalidation_log (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    keys        text[] NOT NULL,
    tags        text[] NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS invalidation_log_tenant_id
    ON thorbis.invalidation_log (tenant, id);
