-- thorbis-cache core 011: the rules the change capture was set up for (issue 14).
--
-- A rolling deploy runs the new release's `thorbis-cache db init` while workers of the
-- old release still read the changes: a rule the new release added was unknown to them,
-- they planned nothing for its changes, confirmed them, and the entries it protects
-- stayed stale until their TTL. `db init` (and `CacheApp.start(apply_sql=True)`) now
-- records here, before it changes the capture, every rule it set the capture up for;
-- each worker reads this table with every batch and applies a recorded rule it lacks
-- (by name and digest of its definition) conservatively: for the change's tenant,
-- every tag the rule's targets reach (`invalidation/rules_record.py`).

CREATE TABLE IF NOT EXISTS thorbis.capture_rules (
    name                text PRIMARY KEY,
    digest              text NOT NULL,
    table_name          text NOT NULL,
    tenant_column       text NOT NULL,
    operations          text[] NOT NULL,
    significant_columns text[] NOT NULL,
    -- the tags its targets reach: explicit tags and the target schemas' tags
    tags                text[] NOT NULL,
    -- its target schemas that carry no tag (a worker without the rule cannot reach them)
    untagged            text[] NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);

-- Whether `db init` set the table's REPLICA IDENTITY FULL (logical capture: a rule reads
-- an old non-key value), so that `db init --prune` may set it back to DEFAULT once no
-- rule needs it; a table the host set FULL itself is left as it is.
ALTER TABLE thorbis.captured_tables
    ADD COLUMN IF NOT EXISTS replica_identity_set boolean NOT NULL DEFAULT false;
