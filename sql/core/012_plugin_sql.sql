-- thorbis-cache core 012: the plugin SQL each database holds (issue 14).
--
-- Every `thorbis-cache db init`, and every application start with `apply_sql=True`,
-- applied each plugin's SQL again, although its scripts are idempotent: and idempotent
-- DDL still locks (`CREATE INDEX IF NOT EXISTS` asks for a lock that conflicts with
-- every writer of the table before it finds the index there). While a batch job of the
-- host held a transaction open on one of those tables, no instance of the application
-- could start. A plugin's scripts and views are now applied again only when their
-- digest differs from the one recorded here (as a repeatable migration is, in the
-- migration tools that have them); `db init --reapply-sql` applies them regardless.

CREATE TABLE IF NOT EXISTS thorbis.plugin_sql (
    plugin       text PRIMARY KEY,
    -- sha256 of the plugin's scripts (names and text, in order) and views' definitions
    digest       text NOT NULL,
    distribution text,
    version      text,
    -- the relations of the plugin's schemas once it was applied: one of them gone (a
    -- schema dropped, an index dropped by hand) and the SQL is applied again
    relations    text[] NOT NULL DEFAULT '{}',
    applied_at   timestamptz NOT NULL DEFAULT now()
);
