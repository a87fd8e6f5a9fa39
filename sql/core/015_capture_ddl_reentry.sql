-- thorbis-cache core 015: the capture's event triggers do not fire themselves.
--
-- Found as an operator would, with capture triggers: a migration renaming, dropping or
-- retyping a column a rule reads took 3-5 s and raised 500+ WARNINGs. The event trigger
-- (007) installed the table's stand-in capture, whose own ALTER TABLE (009: ENABLE
-- ALWAYS TRIGGER) fired the event trigger again before the new state was recorded, which
-- installed it again, and so on ~250 deep, until "stack depth limit exceeded", all under
-- the migration's ACCESS EXCLUSIVE lock (the host's writes of the table waited). The
-- partitions' event trigger (010) looped the same way through their triggers' DDL.
--
-- Both functions now return at once when either runs inside them (one
-- transaction-local setting says so), and the check records the table's new state
-- before it installs the stand-in. Their bodies are otherwise 007's and 010's.

CREATE OR REPLACE FUNCTION thorbis.capture_ddl_check() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $check$
DECLARE
    t thorbis.captured_tables;
    present text[];
    lost text[];
    changed text[];
    triggered boolean;
    created record;
    pub text;
BEGIN
    -- Our own DDL below (a stand-in's triggers, ALTER TABLE ... ENABLE ALWAYS TRIGGER,
    -- a publication's table) fires this trigger again inside it: not the host's
    -- statement, nothing to check. Without this, each nested round installed the
    -- stand-in again, ~250 deep, until PostgreSQL's stack limit.
    IF current_setting('thorbis.capture_ddl_active', true) = 'on' THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('thorbis.capture_ddl_active', 'on', true);
    -- A watched table dropped and created again under its name, or replaced by another
    -- renamed to it (a migration that rebuilds it), has no capture: put it back at once,
    -- as a stand-in (triggers) or in the publications (logical), and say so.
    FOR created IN
        SELECT c.table_name, d.objid FROM thorbis.captured_tables c
          JOIN pg_event_trigger_ddl_commands() AS d
            ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
           -- created under the name, or renamed to it (a rebuild's swap)
           AND d.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
                                 'ALTER TABLE')
           AND d.object_identity = c.table_name AND d.objid <> c.relid
    LOOP
      BEGIN
        UPDATE thorbis.captured_tables SET relid = created.objid, recreated = true,
               changed_at = now()
         WHERE table_name = created.table_name RETURNING * INTO t;
        present := thorbis.capture_present(t.relid);
        lost := thorbis.capture_lost(t, present);
        UPDATE thorbis.captured_tables SET incomplete = lost
         WHERE table_name = t.table_name;
        IF t.column_types IS NOT NULL THEN  -- captured by triggers
            PERFORM thorbis.capture_standin_install(t, present);
        ELSE  -- logical: the publications lost it with the old table
            FOR pub IN SELECT p.pubname FROM pg_catalog.pg_publication p
                        WHERE p.pubname LIKE 'thorbis\_%' LOOP
                EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', pub,
                               t.relid::regclass);
            END LOOP;
            IF EXISTS (SELECT 1 FROM unnest(t.columns) AS c
                        WHERE NOT c = ANY (t.key_columns) AND c = ANY (present)) THEN
                EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', t.relid::regclass);
            END IF;
        END IF;
        RAISE WARNING 'thorbis-cache: % was created again: its change capture is put back '
            '(%); run `thorbis-cache db init` to make it as db init does',
            t.relid::regclass, CASE WHEN t.column_types IS NOT NULL
                                    THEN 'a stand-in of the capture triggers'
                                    ELSE 'added to the logical capture''s publication' END;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'thorbis-cache: could not put the change capture of % back (%): run '
            '`thorbis-cache db init`', created.table_name, SQLERRM;
      END;
    END LOOP;
    FOR t IN
        SELECT c.* FROM thorbis.captured_tables c
         WHERE c.relid IN (SELECT d.objid FROM pg_event_trigger_ddl_commands() AS d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass)
    LOOP
      BEGIN
        -- Captured by triggers (to replace), or logically (nothing to break: recorded
        -- for `health`, the worker copes).
        triggered := EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                              WHERE g.tgrelid = t.relid AND g.tgname IN (
                                    'thorbis_capture_insert', 'thorbis_capture_update',
                                    'thorbis_capture_delete', 'thorbis_capture_key'));
        present := thorbis.capture_present(t.relid);
        lost := thorbis.capture_lost(t, present);
        changed := ARRAY(SELECT ct.key FROM jsonb_each_text(t.column_types) AS ct
                           JOIN pg_catalog.pg_attribute a
                             ON a.attrelid = t.relid AND a.attname = ct.key
                            AND a.attnum > 0 AND NOT a.attisdropped
                          WHERE a.atttypid <> ct.value::oid ORDER BY ct.key);
        IF changed = '{}' THEN changed := NULL; END IF;
        IF NOT triggered THEN
            -- Logical capture reads each change as the WAL has it: only recorded (a
            -- column back is complete again by itself).
            CONTINUE WHEN lost IS NOT DISTINCT FROM t.incomplete;
            UPDATE thorbis.captured_tables SET incomplete = lost, changed_at = now()
             WHERE table_name = t.table_name;
            IF lost IS NOT NULL THEN
                RAISE WARNING 'thorbis-cache: % no longer has column(s) % that its '
                    'invalidation rules read: the worker invalidates its changes '
                    'conservatively (by tags where a key needs a missing column); update '
                    'the rules to the table, then run `thorbis-cache db init`',
                    t.relid::regclass, array_to_string(lost, ', ');
            END IF;
            CONTINUE;
        END IF;
        IF lost IS NULL AND changed IS NULL THEN
            IF t.incomplete IS NOT NULL OR t.retyped IS NOT NULL THEN
                RAISE WARNING 'thorbis-cache: % has every column its invalidation rules '
                    'read again, as they were; run `thorbis-cache db init` to put its '
                    'generated change capture back', t.relid::regclass;
            END IF;
            CONTINUE;
        END IF;
        CONTINUE WHEN lost IS NOT DISTINCT FROM t.incomplete
                  AND changed IS NOT DISTINCT FROM t.retyped;
        -- Recorded first, then the stand-in, for the columns there now (made again at
        -- each such change).
        UPDATE thorbis.captured_tables
           SET incomplete = lost, retyped = changed, changed_at = now()
         WHERE table_name = t.table_name;
        PERFORM thorbis.capture_standin_install(t, present);
        IF lost IS NOT NULL THEN
            RAISE WARNING 'thorbis-cache: % no longer has column(s) % that its '
                'invalidation rules read: its change capture now names only the columns '
                'it has, so that writes keep working, and the worker invalidates its '
                'changes conservatively (by tags where a key needs a missing column); '
                'update the rules to the table, then run `thorbis-cache db init`',
                t.relid::regclass, array_to_string(lost, ', ');
        ELSE
            RAISE WARNING 'thorbis-cache: column(s) % of % changed type: its change '
                'capture now writes them as JSON of their new type (slower, but exact); '
                'run `thorbis-cache db init` to generate it for the new types',
                array_to_string(changed, ', '), t.relid::regclass;
        END IF;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'thorbis-cache: could not check % against its change capture (%): '
            'if the statement renamed, dropped or retyped a column its invalidation rules '
            'read, run `thorbis-cache db init`', t.relid::regclass, SQLERRM;
      END;
    END LOOP;
    PERFORM pg_catalog.set_config('thorbis.capture_ddl_active', 'off', true);
END
$check$;

CREATE OR REPLACE FUNCTION thorbis.capture_partitions_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $ddl$
DECLARE
    t thorbis.captured_tables;
BEGIN
    -- The same setting as thorbis.capture_ddl_check's: the DDL either of them runs
    -- (stand-ins, partition triggers) fires both again inside it, with nothing of the
    -- host's to do. For the host's statement this one fires after the check has ended
    -- (name order), the setting off again.
    IF current_setting('thorbis.capture_ddl_active', true) = 'on' THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('thorbis.capture_ddl_active', 'on', true);
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
    PERFORM pg_catalog.set_config('thorbis.capture_ddl_active', 'off', true);
END
$ddl$;
