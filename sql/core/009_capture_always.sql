-- thorbis-cache core 009: capture triggers fire in a replica session too (issue 14).
--
-- Found as a user would: a bulk fix run with `SET session_replication_role = replica`
-- (the usual way to skip foreign-key checks and the host's own triggers; `pg_restore
-- --disable-triggers` and many ETL tools do it) was not captured: triggers enabled the
-- ordinary way (ORIGIN) do not fire in a replica session, so the cache kept the old
-- rows. `thorbis-cache db init` now sets the generated capture triggers to ENABLE
-- ALWAYS; this migration does the same for the stand-in a migration puts in place
-- (thorbis.capture_standin_install, as in 007, plus ENABLE ALWAYS) and for the triggers
-- already installed. A trigger someone disabled on purpose (DISABLE TRIGGER) stays so:
-- `thorbis-cache health` reports it.
--
-- And they run as their owner: a host's application role may have no rights on the
-- thorbis schema, and under capture triggers every write of a watched table failed with
-- `permission denied for schema thorbis`. `db init` generates SECURITY DEFINER
-- functions with a fixed search_path; so does the stand-in below, and the TRUNCATE
-- capture of 008 (its body names thorbis.outbox).

CREATE OR REPLACE FUNCTION thorbis.capture_standin_install(t thorbis.captured_tables,
                                                          present text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $install$
DECLARE
    fn text := format('thorbis.%I', 'capture_standin__' || replace(t.table_name, '.', '__'));
    op text;
BEGIN
    EXECUTE thorbis.capture_standin_sql(t, present, fn);
    -- As its owner: the writer may have no rights on thorbis (the body is qualified).
    EXECUTE format('ALTER FUNCTION %s() SECURITY DEFINER SET search_path = pg_catalog, '
                   'pg_temp', fn);
    EXECUTE format('DROP TRIGGER IF EXISTS thorbis_capture_key ON %s', t.relid::regclass);
    FOREACH op IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s',
                       'thorbis_capture_' || lower(op), t.relid::regclass);
        CONTINUE WHEN NOT op = ANY (t.operations);
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
            'EXECUTE FUNCTION %s()',
            'thorbis_capture_' || lower(op), op, t.relid::regclass,
            CASE op WHEN 'INSERT' THEN 'NEW TABLE AS thorbis_new'
                    WHEN 'DELETE' THEN 'OLD TABLE AS thorbis_old'
                    ELSE 'OLD TABLE AS thorbis_old NEW TABLE AS thorbis_new' END,
            fn);
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.relid::regclass,
                       'thorbis_capture_' || lower(op));
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = t.relid
                      AND g.tgname = 'thorbis_capture_truncate') THEN
        EXECUTE format('CREATE TRIGGER thorbis_capture_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION thorbis.capture_truncate(%L)',
                       t.relid::regclass, t.table_name);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER thorbis_capture_truncate',
                   t.relid::regclass);
END
$install$;

DO $always$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT t.tgrelid::regclass AS rel, t.tgname
               FROM pg_catalog.pg_trigger t
              WHERE NOT t.tgisinternal AND t.tgenabled = 'O'
                AND t.tgname IN ('thorbis_capture_insert', 'thorbis_capture_update',
                                 'thorbis_capture_delete', 'thorbis_capture_truncate')
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', g.rel, g.tgname);
        EXCEPTION WHEN insufficient_privilege THEN
            -- Not the table's owner: `db init` as its owner installs it so.
            RAISE WARNING 'thorbis-cache: % of % still skips replica sessions: run '
                          '`thorbis-cache db init` as the owner of %', g.tgname, g.rel, g.rel;
        END;
    END LOOP;
END
$always$;

ALTER FUNCTION thorbis.capture_truncate() SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
