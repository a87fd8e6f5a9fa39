-- thorbis-cache core 013: which UPDATEs the capture triggers record (issue 14).
--
-- The capture triggers of a table record an UPDATE only when one of the rules'
-- significant columns changed (or every UPDATE, when a rule has none). A release that
-- added a rule, or a significant column, was started before its `db init` ran: the
-- triggers made for the earlier release's rules were there, so the start went on, and
-- the UPDATEs only the new rules watch wrote nothing: their entries stayed stale until
-- their TTL. `db init` now records each table's filter here, and the worker and the
-- host app (`capture_check.py`) refuse to start with rules that it does not cover,
-- naming them. NULL: recorded by an earlier release (not checked); '{}': every UPDATE.
--
-- The other way round, a release that removed a rule narrowed the triggers under the
-- earlier release's processes, which still run during a rolling deploy. A setup only
-- adds: the triggers of a table record what every rule of the record
-- (thorbis.capture_rules) on it needs, until `db init --prune` forgets the removed
-- ones. For that the record keeps the columns each rule reads.

ALTER TABLE thorbis.captured_tables ADD COLUMN IF NOT EXISTS update_filter text[];

-- The columns the rule reads: tenant, significant columns, its targets' parameters
-- (NULL: recorded by an earlier release; the tenant and significant columns are known).
ALTER TABLE thorbis.capture_rules ADD COLUMN IF NOT EXISTS columns text[];
