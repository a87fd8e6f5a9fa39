-- thorbis-cache core 006: leaner outbox rows for the capture triggers (issue 14).
--
-- Measured on a single-row UPDATE of a captured table (docs/architecture.md, "Change
-- capture"): of the 10-12 us the capture added, about 4.5 went to three
-- jsonb_build_object calls and 1-2.5 to the CHECK on `operation` (PostgreSQL reads a
-- CHECK's stored expression back from text and plans it again for every INSERT
-- statement, and the triggers run one per captured statement); under 8 writers the
-- sequence's page lock was a point of contention.
--
-- * The CHECK goes. The only writers are the generated capture triggers, which write
--   the literal 'INSERT', 'UPDATE' or 'DELETE'; a row with anything else plans no
--   invalidation and is dead-lettered by the worker (kept, never lost).
-- * Triggers write the old and new images as text arrays (`old_values`, `new_values`:
--   a text cast per value, about a seventh of the cost of jsonb_build_object) and a
--   `shape`: the row of thorbis.capture_shapes naming the column of each position (the
--   columns the rules read and the primary key), which of them form the key and which
--   the images, and which values are JSON strings (text columns, stored as they are)
--   rather than JSON text (integers and booleans cast to text, every other type
--   to_jsonb(...)::text). The worker rebuilds the JSON objects of before at claim time,
--   the key from the new image (the old one for a DELETE). `pk`/`old`/`new` (jsonb)
--   stay for rows written by older triggers: a row already in the outbox during the
--   upgrade is processed as before.
-- * Shapes are written by `thorbis-cache db init` (trigger installation), never
--   changed and never deleted (a row in the outbox may still name an old one). No
--   foreign key from thorbis.outbox: checking it would cost every captured statement.
-- * The id sequence hands each session 100 ids at a time: 8 writers no longer take the
--   sequence's page lock for every row. Ids stay unique and nothing relies on their
--   order for correctness (claim-and-delete has no cursor); the worker's "lowest ids
--   first" is now oldest first within a session, and across sessions a row may be
--   claimed after rows that a session with an older block of ids wrote later.
--
-- thorbis.outbox_images shows every outbox row with its JSON, whichever form it has.

ALTER TABLE thorbis.outbox DROP CONSTRAINT IF EXISTS outbox_operation_check;

CREATE TABLE IF NOT EXISTS thorbis.capture_shapes (
    id            serial PRIMARY KEY,
    table_name    text NOT NULL,
    columns       text[] NOT NULL,     -- the layout of old_values/new_values
    quoted        boolean[] NOT NULL,  -- per position: a JSON string, else JSON text
    key_columns   text[] NOT NULL,     -- the primary key, in key order
    image_columns text[] NOT NULL,     -- the columns of the old/new objects
    UNIQUE (table_name, columns, quoted, key_columns, image_columns)
);

ALTER TABLE thorbis.outbox
    ALTER COLUMN pk DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS shape integer,
    ADD COLUMN IF NOT EXISTS old_values text[],
    ADD COLUMN IF NOT EXISTS new_values text[];

ALTER SEQUENCE thorbis.outbox_id_seq CACHE 100;

-- The object of the `wanted` columns of one image: columns[i] -> vals[i], a JSON
-- string when quoted[i], else JSON text; NULL values are JSON null, NULL arrays no image.
CREATE OR REPLACE FUNCTION thorbis.capture_image(columns text[], quoted boolean[],
                                                 vals text[], wanted text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $image$
    SELECT CASE WHEN vals IS NOT NULL THEN coalesce(jsonb_object_agg(
               u.name, CASE WHEN u.val IS NULL THEN 'null'::jsonb
                            WHEN u.quoted THEN to_jsonb(u.val) ELSE u.val::jsonb END),
               '{}'::jsonb) END
      FROM unnest(columns, quoted, vals) AS u(name, quoted, val)
     WHERE u.name = ANY (wanted)
$image$;

CREATE OR REPLACE VIEW thorbis.outbox_images AS
SELECT o.id, o.txid, o.created_at, o.table_name, o.operation, o.tenant_id,
       coalesce(o.pk, thorbis.capture_image(s.columns, s.quoted,
                                            coalesce(o.new_values, o.old_values),
                                            s.key_columns)) AS pk,
       coalesce(o.old, thorbis.capture_image(s.columns, s.quoted, o.old_values,
                                             s.image_columns)) AS old,
       coalesce(o.new, thorbis.capture_image(s.columns, s.quoted, o.new_values,
                                             s.image_columns)) AS new,
       o.attempts, o.last_error
  FROM thorbis.outbox o
  LEFT JOIN thorbis.capture_shapes s ON s.id = o.shape;
