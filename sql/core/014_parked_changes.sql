-- thorbis-cache core 014: changes parked while their Redis Cluster shard is out of reach.
--
-- A tenant's keys live on one shard of a Redis Cluster. When the outbox worker cannot
-- reach a tenant's shard while the others answer, it applies the others' changes and
-- parks that tenant's here (in the batch's transaction). They used to go back into
-- thorbis.outbox: every later batch claimed them with the live changes, was refused by
-- the silent shard and wrote them back, so under a long shard loss with heavy writes
-- the live shards' changes waited behind a lengthening rotation. Here they wait for
-- their tenant's retry time instead, which backs off while the shard stays away; the
-- worker looks at one due tenant at a time, asks its shard first, and only then takes
-- that tenant's changes (oldest first, a batch at a time).
--
-- Rows keep their outbox form (JSON images), creation time, transaction and attempts.
-- `tenant_id` NULL (a TRUNCATE: every tenant) is scheduled as the tenant ''.

CREATE TABLE IF NOT EXISTS thorbis.parked_changes (
    id          bigserial PRIMARY KEY,
    txid        xid8,
    created_at  timestamptz NOT NULL,
    table_name  text NOT NULL,
    operation   text NOT NULL,
    tenant_id   text,
    pk          jsonb,
    old         jsonb,
    new         jsonb,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    parked_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS parked_changes_tenant_idx
    ON thorbis.parked_changes ((coalesce(tenant_id, '')), id);

-- One row per tenant with parked changes: when to try its shard again, and why the
-- last try failed. Deleted with the tenant's last parked change.
CREATE TABLE IF NOT EXISTS thorbis.parked_tenants (
    tenant      text PRIMARY KEY,
    retry_at    timestamptz NOT NULL,
    tries       integer NOT NULL DEFAULT 0,
    last_error  text,
    since       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS parked_tenants_retry_idx ON thorbis.parked_tenants (retry_at);
