-- thorbis-cache core 008: a TRUNCATE of a captured table is captured (issue 14).
--
-- TRUNCATE fires no INSERT, UPDATE or DELETE trigger: with capture triggers, a host that
-- truncated a watched table (a reload, a tenant reset) left every entry built from it
-- in the cache until its TTL, and logical capture only logged it. A TRUNCATE removes the
-- rows of every tenant and names none: `thorbis-cache db init` now adds to each captured
-- table a statement-level AFTER TRUNCATE trigger running this function, which writes
-- one outbox row (operation TRUNCATE, no tenant, no images); the worker invalidates, for
-- every tenant with a tag index, every tag the table's rules reach (as after a lost
-- replication slot). Logical capture plans the pgoutput Truncate message the same way.
-- TG_ARGV[0]: the table as the rules name it.

CREATE OR REPLACE FUNCTION thorbis.capture_truncate() RETURNS trigger
LANGUAGE plpgsql AS $capture$
BEGIN
    INSERT INTO thorbis.outbox (table_name, operation) VALUES (TG_ARGV[0], 'TRUNCATE');
    RETURN NULL;
END
$capture$;
