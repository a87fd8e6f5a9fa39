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
--   every ALTER TABLE (db init creates it where the role may: event triggers need a
--   superuser, or rds_superuser on RDS), checks the captured tables the statement
--   touched. When one lost a column its capture reads, or such a column changed type
--   (the generated triggers write each value by its type at install time), it puts
--   thorbis.capture_incomplete() in place of the generated triggers, in the
--   migration's own transaction, and says so with a WARNING.
-- * thorbis.capture_incomplete() reads the row by name at run time (to_jsonb), so it
--   cannot fail on a missing column: it writes the columns the rules read that are
--   still there, as JSON (an UPDATE's rows paired by key while every key column is
--   there, one-sided otherwise). The worker applies such changes conservatively: a
--   rule on a missing significant column fires, and a key that needs a missing column
--   is replaced by its schema's tags (a column that only changed type is still there:
--   nothing is lost). It costs more per row than the generated capture (a jsonb of
--   the whole row): `thorbis-cache db init` with rules that match the table puts the
--   generated capture back.

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
    changed_at    timestamptz NOT NULL DEFAULT now()
);

-- The members of `obj` named in `names` (an image of the columns still there);
-- NULL for no object (the missing side of an unpaired UPDATE row).
CREATE OR REPLACE FUNCTION thorbis.jsonb_pick(obj jsonb, names text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE STRICT AS $pick$
    SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
      FROM jsonb_each(obj) AS e WHERE e.key = ANY (names)
$pick$;

-- TG_ARGV: the table as the rules name it, its tenant column, the columns the rules
-- read (a text[] literal), the primary key columns (a text[] literal). An UPDATE pairs
-- old and new rows by their key when the table still has every key column; a row
-- without a partner (its key changed, or a key column is gone) is recorded one-sided.
CREATE OR REPLACE FUNCTION thorbis.capture_incomplete() RETURNS trigger
LANGUAGE plpgsql AS $capture$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, old, new)
        SELECT TG_ARGV[0], TG_OP, coalesce(n.r, o.r) ->> TG_ARGV[1], coalesce(n.k, o.k),
               thorbis.jsonb_pick(o.r, TG_ARGV[2]::text[]),
               thorbis.jsonb_pick(n.r, TG_ARGV[2]::text[])
          FROM (SELECT r, thorbis.jsonb_pick(r, TG_ARGV[3]::text[]) AS k,
                       CASE WHEN r ?& TG_ARGV[3]::text[]
                            THEN thorbis.jsonb_pick(r, TG_ARGV[3]::text[]) END AS pair
                  FROM (SELECT to_jsonb(x) AS r FROM thorbis_old x) AS rows) AS o
          FULL JOIN
               (SELECT r, thorbis.jsonb_pick(r, TG_ARGV[3]::text[]) AS k,
                       CASE WHEN r ?& TG_ARGV[3]::text[]
                            THEN thorbis.jsonb_pick(r, TG_ARGV[3]::text[]) END AS pair
                  FROM (SELECT to_jsonb(x) AS r FROM thorbis_new x) AS rows) AS n
            ON o.pair = n.pair;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, old)
        SELECT TG_ARGV[0], TG_OP, r ->> TG_ARGV[1],
               thorbis.jsonb_pick(r, TG_ARGV[3]::text[]),
               thorbis.jsonb_pick(r, TG_ARGV[2]::text[])
          FROM (SELECT to_jsonb(x) AS r FROM thorbis_old x) AS changed;
    ELSE
        INSERT INTO thorbis.outbox (table_name, operation, tenant_id, pk, new)
        SELECT TG_ARGV[0], TG_OP, r ->> TG_ARGV[1],
               thorbis.jsonb_pick(r, TG_ARGV[3]::text[]),
               thorbis.jsonb_pick(r, TG_ARGV[2]::text[])
          FROM (SELECT to_jsonb(x) AS r FROM thorbis_new x) AS changed;
    END IF;
    RETURN NULL;
END
$capture$;

-- It runs after every ALTER TABLE of the database, whoever runs it: as its owner (the
-- role that applied this file, which owns thorbis.captured_tables), with a search_path
-- that no caller can change, and it never fails the statement: a check that cannot be
-- made is a WARNING naming the table, never an error that would block a migration.
CREATE OR REPLACE FUNCTION thorbis.capture_ddl_check() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $check$
DECLARE
    t record;
    lost text[];
    changed text[];
    op text;
BEGIN
    FOR t IN
        SELECT c.* FROM thorbis.captured_tables c
         WHERE c.relid IN (SELECT d.objid FROM pg_event_trigger_ddl_commands() AS d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass)
           -- Capture by triggers only (a logically captured table has none to break).
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                        WHERE g.tgrelid = c.relid AND g.tgname IN (
                              'thorbis_capture_insert', 'thorbis_capture_update',
                              'thorbis_capture_delete', 'thorbis_capture_key'))
    LOOP
      BEGIN
        SELECT array_agg(DISTINCT w ORDER BY w) INTO lost
          FROM unnest(t.columns || t.key_columns || t.tenant_column) AS w
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = t.relid AND a.attname = w
                              AND a.attnum > 0 AND NOT a.attisdropped);
        SELECT array_agg(ct.key ORDER BY ct.key) INTO changed
          FROM jsonb_each_text(t.column_types) AS ct
          JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attname = ct.key
                                        AND a.attnum > 0 AND NOT a.attisdropped
         WHERE a.atttypid <> ct.value::oid;
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
        IF t.incomplete IS NULL AND t.retyped IS NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS thorbis_capture_key ON %s',
                           t.relid::regclass);
            FOREACH op IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE'] LOOP
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s',
                               'thorbis_capture_' || lower(op), t.relid::regclass);
                CONTINUE WHEN NOT op = ANY (t.operations);
                EXECUTE format(
                    'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                    'EXECUTE FUNCTION thorbis.capture_incomplete(%L, %L, %L, %L)',
                    'thorbis_capture_' || lower(op), op, t.relid::regclass,
                    CASE op WHEN 'INSERT' THEN 'NEW TABLE AS thorbis_new'
                            WHEN 'DELETE' THEN 'OLD TABLE AS thorbis_old'
                            ELSE 'OLD TABLE AS thorbis_old NEW TABLE AS thorbis_new' END,
                    t.table_name, t.tenant_column, t.columns::text, t.key_columns::text);
            END LOOP;
        END IF;
        UPDATE thorbis.captured_tables
           SET incomplete = lost, retyped = changed, changed_at = now()
         WHERE table_name = t.table_name;
        IF lost IS NOT NULL THEN
            RAISE WARNING 'thorbis-cache: % no longer has column(s) % that its '
                'invalidation rules read: its change capture now reads each changed row '
                'by name, so that writes keep working, and the worker invalidates its '
                'changes conservatively (by tags where a key needs a missing column); '
                'update the rules to the table, then run `thorbis-cache db init`',
                t.relid::regclass, array_to_string(lost, ', ');
        ELSE
            RAISE WARNING 'thorbis-cache: column(s) % of % changed type: its change '
                'capture now reads each changed row by name (slower, but exact); run '
                '`thorbis-cache db init` to generate it for the new types',
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
