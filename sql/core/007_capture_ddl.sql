-- thorbis-cache core 007: a migration of the host's never breaks its writes (issue 14).
--
-- The generated capture triggers name the columns the rules read. PL/pgSQL binds
-- names when a statement runs, so once a migration renamed or dropped one of them
-- (`ALTER TABLE hs.customers RENAME COLUMN account_status TO status`), every later
-- INSERT, UPDATE or DELETE of the table failed with `column o.account_status does not
-- exist`: the cache's capture took the host's writes down.
--
-- * thorbis.captured_tables records what each generated capture reads, by table oid
--   (which a renamed table keeps): written by `thorbis-cache db init` (triggers, and
--   logical capture, whose worker finds a renamed table through it).
-- * thorbis.capture_ddl_check(), run by the event trigger `thorbis_capture_ddl` after
--   every ALTER TABLE and CREATE TABLE (db init creates it where the role may: event triggers need a
--   superuser, or rds_superuser on RDS), checks the captured tables the statement
--   touched. When one lost a column its capture reads, or such a column changed type
--   (the generated triggers write each value by its type at install time), it puts a
--   stand-in capture in place of the generated triggers, in the migration's own
--   transaction, and says so with a WARNING: thorbis.capture_standin__<schema>__<table>,
--   made by thorbis.capture_standin_sql for the columns the table has now (made again
--   at each later such change), writing what the triggers wrote before the compact form
--   (jsonb_build_object of the columns the rules read, in thorbis.outbox's jsonb
--   columns, which the worker still reads). A missing column is simply absent from the
--   images; the worker applies such changes conservatively: a rule on a missing
--   significant column fires, and a key that needs a missing column is replaced by its
--   schema's tags (a column that only changed type is still there: nothing is lost).
--   `thorbis-cache db init` with rules that match the table puts the generated capture
--   back. A logically captured table has no trigger to break: its missing columns are
--   only recorded (for `thorbis-cache health`) and said.
-- * The same check runs after CREATE TABLE: a table that takes a captured name under a
--   new oid (a migration rebuilt it: dropped and created again, or a copy renamed in
--   its place) had no capture at all; it gets the stand-in (triggers) or the logical
--   capture's publications back, with a WARNING, and `recreated` until `db init`.

CREATE TABLE IF NOT EXISTS thorbis.captured_tables (
    table_name    text PRIMARY KEY,     -- as the rules name it
    relid         oid NOT NULL,         -- the table (kept when it is renamed)
    tenant_column text NOT NULL,
    columns       text[] NOT NULL,      -- the columns the rules read
    key_columns   text[] NOT NULL,      -- the primary key
    operations    text[] NOT NULL,      -- INSERT, UPDATE, DELETE: those captured
    column_types  jsonb,                -- column -> type oid the triggers were made for
    incomplete    text[],               -- columns a DDL took away (NULL: none)
    retyped       text[],               -- columns a DDL changed the type of (NULL: none)
    recreated     boolean NOT NULL DEFAULT false,  -- dropped and created again since
    changed_at    timestamptz NOT NULL DEFAULT now()
);

-- The columns table `relid` has now.
CREATE OR REPLACE FUNCTION thorbis.capture_present(relid oid) RETURNS text[]
LANGUAGE sql STABLE AS $present$
    SELECT ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped)
$present$;

-- The columns captured table `t`'s capture reads that are not in `present`, sorted;
-- NULL when none is missing.
CREATE OR REPLACE FUNCTION thorbis.capture_lost(t thorbis.captured_tables, present text[])
RETURNS text[] LANGUAGE sql IMMUTABLE AS $lost$
    SELECT nullif(ARRAY(SELECT DISTINCT w FROM unnest(t.columns || t.key_columns
                                                      || t.tenant_column) AS w
                         WHERE NOT w = ANY (present) ORDER BY w), '{}')
$lost$;

-- `jsonb_build_object('c1', a.c1, ...)` of the columns `names` of row alias `alias`.
CREATE OR REPLACE FUNCTION thorbis.capture_object(alias text, names text[])
RETURNS text LANGUAGE sql IMMUTABLE AS $object$
    SELECT CASE WHEN cardinality(names) = 0 THEN '''{}''::jsonb'
                ELSE 'jsonb_build_object(' || (SELECT string_agg(format('%L, %s.%I', c,
                                                                       alias, c), ', ')
                                                 FROM unnest(names) AS c) || ')' END
$object$;

-- The statement that (re)creates the stand-in capture function of captured table `t`
-- for the columns the table still has (`present`): what the generated triggers wrote
-- before the compact form (jsonb_build_object of the columns, in the jsonb columns of
-- thorbis.outbox, which the worker reads as ever), naming only columns that exist now.
-- An UPDATE's rows are paired by key (a FULL JOIN: a row whose key changed comes out
-- one-sided) while every key column is there; otherwise each row is written one-sided.
CREATE OR REPLACE FUNCTION thorbis.capture_standin_sql(t thorbis.captured_tables,
                                                       present text[], fn text)
RETURNS text LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $sql$
DECLARE
    cols text[] := ARRAY(SELECT c FROM unnest(t.columns) AS c
                          WHERE c = ANY (present) ORDER BY c);
    keys text[] := ARRAY(SELECT c FROM unnest(t.key_columns) AS c WHERE c = ANY (present));
    paired boolean := cardinality(keys) = cardinality(t.key_columns);
    tenant_ok boolean := t.tenant_column = ANY (present);
    name text := quote_literal(t.table_name);
    head text := 'INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, old, new) ';
    body text;
BEGIN
    body := format($f$
BEGIN
    IF TG_OP = 'INSERT' THEN
        %1$s SELECT %2$s, 'INSERT', %3$s, %4$s, NULL, %5$s FROM thorbis_new n;
    ELSIF TG_OP = 'DELETE' THEN
        %1$s SELECT %2$s, 'DELETE', %6$s, %7$s, %8$s, NULL FROM thorbis_old o;
    ELSE
        %9$s
    END IF;
    RETURN NULL;
END $f$,
        head, name,
        CASE WHEN tenant_ok THEN format('n.%I::text', t.tenant_column) ELSE 'NULL' END,
        thorbis.capture_object('n', keys), thorbis.capture_object('n', cols),
        CASE WHEN tenant_ok THEN format('o.%I::text', t.tenant_column) ELSE 'NULL' END,
        thorbis.capture_object('o', keys), thorbis.capture_object('o', cols),
        CASE WHEN paired THEN format(
            '%s SELECT %s, ''UPDATE'', coalesce(%s, %s), coalesce(%s, %s), %s, %s '
            'FROM thorbis_old o FULL JOIN thorbis_new n ON %s;',
            head, name,
            CASE WHEN tenant_ok THEN format('n.%I::text', t.tenant_column) ELSE 'NULL' END,
            CASE WHEN tenant_ok THEN format('o.%I::text', t.tenant_column) ELSE 'NULL' END,
            format('CASE WHEN n.%I IS NOT NULL THEN %s END', keys[1],
                   thorbis.capture_object('n', keys)),
            format('CASE WHEN o.%I IS NOT NULL THEN %s END', keys[1],
                   thorbis.capture_object('o', keys)),
            format('CASE WHEN o.%I IS NOT NULL THEN %s END', keys[1],
                   thorbis.capture_object('o', cols)),
            format('CASE WHEN n.%I IS NOT NULL THEN %s END', keys[1],
                   thorbis.capture_object('n', cols)),
            (SELECT string_agg(format('o.%I = n.%I', k, k), ' AND ') FROM unnest(keys) AS k))
        ELSE format(
            '%1$s SELECT %2$s, ''UPDATE'', %3$s, %4$s, %5$s, NULL FROM thorbis_old o; '
            '%1$s SELECT %2$s, ''UPDATE'', %6$s, %7$s, NULL, %8$s FROM thorbis_new n;',
            head, name,
            CASE WHEN tenant_ok THEN format('o.%I::text', t.tenant_column) ELSE 'NULL' END,
            thorbis.capture_object('o', keys), thorbis.capture_object('o', cols),
            CASE WHEN tenant_ok THEN format('n.%I::text', t.tenant_column) ELSE 'NULL' END,
            thorbis.capture_object('n', keys), thorbis.capture_object('n', cols))
        END);
    RETURN format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql '
                  'AS %L', fn, body);
END
$sql$;
-- Put the stand-in in place on table `t.relid` for the columns it has (`present`):
-- (re)make its function, drop the generated triggers, create the stand-in's, and the
-- TRUNCATE trigger when the table has none (a table created again).
CREATE OR REPLACE FUNCTION thorbis.capture_standin_install(t thorbis.captured_tables,
                                                          present text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $install$
DECLARE
    fn text := format('thorbis.%I', 'capture_standin__' || replace(t.table_name, '.', '__'));
    op text;
BEGIN
    EXECUTE thorbis.capture_standin_sql(t, present, fn);
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
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = t.relid
                      AND g.tgname = 'thorbis_capture_truncate') THEN
        EXECUTE format('CREATE TRIGGER thorbis_capture_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION thorbis.capture_truncate(%L)',
                       t.relid::regclass, t.table_name);
    END IF;
END
$install$;

-- It runs after every ALTER TABLE of the database, whoever runs it: as its owner (the
-- role that applied this file, which owns thorbis.captured_tables), with a search_path
-- that no caller can change, and it never fails the statement: a check that cannot be
-- made is a WARNING naming the table, never an error that would block a migration.
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
        -- The stand-in, for the columns there now (made again at each such change).
        PERFORM thorbis.capture_standin_install(t, present);
        UPDATE thorbis.captured_tables
           SET incomplete = lost, retyped = changed, changed_at = now()
         WHERE table_name = t.table_name;
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
END
$check$;
