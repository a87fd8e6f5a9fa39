-- thorbis-cache core 010: the partitions of a watched table are captured (issue 14).
--
-- Found as a user would, with a watched table partitioned by tenant:
-- * Under capture triggers, a statement that names a partition (`UPDATE
--   hs.customers_acme ...`, a COPY into it, a bulk DELETE of one month) fires that
--   partition's statement triggers, never the partitioned table's: nothing was captured.
--   `thorbis-cache db init` now gives every partition, at any level, the table's own
--   capture triggers (the same functions, which name the table as its rules do), and
--   this event trigger gives them to each partition created or attached later.
-- * Under both captures, rows that leave or join the table without an INSERT, UPDATE or
--   DELETE were not captured: a partition detached or dropped (retention by partition,
--   as pg_partman does), a table with rows attached, and under logical capture a
--   TRUNCATE of one partition (the publication sends its rows as the table's, but not a
--   partition's TRUNCATE). Each is now recorded as a change to every row of the table,
--   as a TRUNCATE is: the worker invalidates every tag its rules reach, for every
--   tenant. Under capture triggers it is an outbox row; under logical capture a
--   transactional message in the WAL (pg_logical_emit_message, prefix 'thorbis_cache'),
--   which the worker reads in commit order like the rows.

-- The partitions of each captured table at the last check, at every level, sorted
-- (NULL: not known yet; '{}': not partitioned).
ALTER TABLE thorbis.captured_tables ADD COLUMN IF NOT EXISTS partitions oid[];

-- Every partition of table `root`, at every level, sorted ('{}' when it has none).
CREATE OR REPLACE FUNCTION thorbis.capture_partitions_of(root oid) RETURNS oid[]
LANGUAGE sql STABLE AS $partitions$
    SELECT coalesce(array_agg(p.relid ORDER BY p.relid), '{}')
      FROM pg_catalog.pg_partition_tree(root) AS p WHERE p.relid <> root
$partitions$;

-- Every row of captured table `t` may have changed (`why` says how): one change the
-- worker plans as a TRUNCATE of the table.
CREATE OR REPLACE FUNCTION thorbis.capture_table_wide(t thorbis.captured_tables, why text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $wide$
BEGIN
    IF t.column_types IS NOT NULL THEN  -- captured by triggers: the outbox
        INSERT INTO thorbis.outbox (table_name, operation) VALUES (t.table_name, 'TRUNCATE');
    ELSE  -- logical capture: in the WAL, in this transaction
        PERFORM pg_logical_emit_message(true, 'thorbis_cache', json_build_object(
            'table', t.table_name, 'operation', 'TRUNCATE', 'why', why)::text);
    END IF;
END
$wide$;

-- The TRUNCATE trigger of a partition under logical capture: the table-wide change
-- above. TG_ARGV[0]: the table as the rules name it.
CREATE OR REPLACE FUNCTION thorbis.capture_truncate_message() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $capture$
BEGIN
    PERFORM thorbis.capture_table_wide(c, format('TRUNCATE of partition %I.%I',
                                                 TG_TABLE_SCHEMA, TG_TABLE_NAME))
       FROM thorbis.captured_tables c WHERE c.table_name = TG_ARGV[0];
    RETURN NULL;
END
$capture$;

-- Give each partition of captured table `t` the capture it needs: under capture
-- triggers the table's own triggers (same names, functions and events), under logical
-- capture a TRUNCATE trigger, and REPLICA IDENTITY FULL where the table has it (the WAL
-- holds a partition's rows under the partition's own identity, which ALTER TABLE on the
-- table does not change: an UPDATE's old row lacked the old values the rules read). A
-- partition whose trigger runs another function (the table's were replaced by a
-- stand-in) gets it again; a trigger someone disabled on a partition stays disabled
-- (`thorbis-cache health` reports it). Returns how many triggers and identities were
-- (re)made.
CREATE OR REPLACE FUNCTION thorbis.capture_partition_triggers(t thorbis.captured_tables)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $sync$
DECLARE
    part oid;
    op text;
    name text;
    fn regproc;
    have regproc;
    identity_full boolean;
    made integer := 0;
BEGIN
    identity_full := t.column_types IS NULL AND (SELECT c.relreplident FROM pg_catalog.pg_class c
                                          WHERE c.oid = t.relid) = 'f';
    FOREACH part IN ARRAY thorbis.capture_partitions_of(t.relid) LOOP
        IF identity_full AND (SELECT c.relreplident FROM pg_catalog.pg_class c
                      WHERE c.oid = part) <> 'f' THEN
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part::regclass);
            made := made + 1;
        END IF;
        FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            name := 'thorbis_capture_' || op;
            fn := NULL;
            IF t.column_types IS NOT NULL THEN
                SELECT g.tgfoid INTO fn FROM pg_catalog.pg_trigger g
                 WHERE g.tgrelid = t.relid AND g.tgname = name;
            ELSIF op = 'truncate' THEN
                fn := 'thorbis.capture_truncate_message'::regproc;
            END IF;
            have := NULL;
            SELECT g.tgfoid INTO have FROM pg_catalog.pg_trigger g
             WHERE g.tgrelid = part AND g.tgname = name;
            CONTINUE WHEN fn IS NOT DISTINCT FROM have;
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', name, part::regclass);
            CONTINUE WHEN fn IS NULL;
            EXECUTE format(
                'CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT '
                'EXECUTE FUNCTION %s(%s)', name, upper(op), part::regclass,
                CASE op WHEN 'insert' THEN 'REFERENCING NEW TABLE AS thorbis_new'
                        WHEN 'delete' THEN 'REFERENCING OLD TABLE AS thorbis_old'
                        WHEN 'update'
                        THEN 'REFERENCING OLD TABLE AS thorbis_old NEW TABLE AS thorbis_new'
                        ELSE '' END,
                fn, CASE op WHEN 'truncate' THEN quote_literal(t.table_name) ELSE '' END);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', part::regclass, name);
            made := made + 1;
        END LOOP;
    END LOOP;
    RETURN made;
END
$sync$;

-- Bring captured table `t`'s partitions up to date after a DDL statement: rows that
-- joined (a table with rows attached) or left (a partition detached or dropped) are
-- recorded as a change to every row; a detached table loses the capture triggers
-- (its writes are no longer the table's); new partitions get theirs.
CREATE OR REPLACE FUNCTION thorbis.capture_partitions_reconcile(t thorbis.captured_tables)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $reconcile$
DECLARE
    present oid[] := thorbis.capture_partitions_of(t.relid);
    gone oid[];
    came oid[];
    part oid;
    filled boolean := false;
    op text;
BEGIN
    IF t.partitions IS NOT NULL THEN
        gone := ARRAY(SELECT unnest(t.partitions) EXCEPT SELECT unnest(present));
        came := ARRAY(SELECT unnest(present) EXCEPT SELECT unnest(t.partitions));
        -- One created by CREATE TABLE ... PARTITION OF is empty: nothing changed.
        FOREACH part IN ARRAY came LOOP
            CONTINUE WHEN (SELECT c.relkind FROM pg_catalog.pg_class c
                            WHERE c.oid = part) <> 'r';
            EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', part::regclass)
               INTO filled;
            EXIT WHEN filled;
        END LOOP;
        IF cardinality(gone) > 0 OR filled THEN
            PERFORM thorbis.capture_table_wide(t, CASE WHEN cardinality(gone) > 0
                THEN format('%s partition(s) detached or dropped', cardinality(gone))
                ELSE 'a partition with rows attached' END);
            RAISE NOTICE 'thorbis-cache: rows % % by a partition: its cached entries are '
                'invalidated for every tenant', CASE WHEN cardinality(gone) > 0
                THEN 'left' ELSE 'joined' END, t.relid::regclass;
        END IF;
        FOREACH part IN ARRAY gone LOOP
            CONTINUE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = part);
            FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'thorbis_capture_' || op,
                               part::regclass);
            END LOOP;
        END LOOP;
    END IF;
    UPDATE thorbis.captured_tables SET partitions = present WHERE table_name = t.table_name;
    PERFORM thorbis.capture_partition_triggers(t);
END
$reconcile$;

-- Run after every CREATE TABLE, ALTER TABLE and DROP TABLE (the event trigger
-- thorbis_capture_partitions, made by `thorbis-cache db init` where the role may, after
-- thorbis_capture_ddl: event triggers fire in name order, so a stand-in put on the table
-- reaches its partitions), for the captured tables whose partitions the statement may
-- have changed. As its owner, with a fixed search_path; a failure is a WARNING naming
-- the table, never an error that would block a migration.
CREATE OR REPLACE FUNCTION thorbis.capture_partitions_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $ddl$
DECLARE
    t thorbis.captured_tables;
BEGIN
    FOR t IN
        SELECT c.* FROM thorbis.captured_tables c
         WHERE EXISTS (SELECT FROM pg_catalog.pg_class r WHERE r.oid = c.relid)
           AND ((TG_TAG = 'DROP TABLE' AND cardinality(c.partitions) > 0)
                OR EXISTS (SELECT FROM pg_event_trigger_ddl_commands() AS d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass
                              AND (d.objid = c.relid OR d.objid = ANY (c.partitions)
                                   OR pg_catalog.pg_partition_root(d.objid) = c.relid)))
    LOOP
      BEGIN
        PERFORM thorbis.capture_partitions_reconcile(t);
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'thorbis-cache: could not bring the change capture of the partitions '
            'of % up to date (%): writes that name a partition may go uncaptured; run '
            '`thorbis-cache db init`', t.table_name, SQLERRM;
      END;
    END LOOP;
END
$ddl$;
