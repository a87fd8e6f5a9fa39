-- thorbis-cache core: the migration ledger (applied before every numbered file).
--
-- Not numbered because it records the numbered files: it must exist before the first of
-- them is applied. Idempotent, so `db init` / `db migrate` run it every time.
-- One row per applied file: its version (the number prefix), its file name, and the
-- SHA-256 of its text, so a file edited after it was applied is refused by name.

CREATE SCHEMA IF NOT EXISTS thorbis;

CREATE TABLE IF NOT EXISTS thorbis.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
