-- thorbis-cache core 001: the transactional outbox and its dead letters.
--
-- Capture triggers (thorbis_cache.postgres.triggers) insert one row per row change, in the
-- transaction of the change, so a change and its outbox row commit or roll back together.
-- Workers consume with claim-and-delete (DELETE ... WHERE id IN (SELECT ... FOR UPDATE
-- SKIP LOCKED) RETURNING *) inside a transaction held open while the batch is processed:
-- there is no "last id seen" position to store, rows of late-committing transactions are
-- simply claimed once they become visible, and a worker that dies releases its rows.
--
-- `txid` is kept for diagnostics (which transaction wrote the change); `attempts` and
-- `last_error` bound retries of a batch whose invalidation keeps failing.

CREATE SCHEMA IF NOT EXISTS thorbis;

CREATE TABLE IF NOT EXISTS thorbis.outbox (
    id          bigserial PRIMARY KEY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    table_name  text NOT NULL,
    operation   text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    tenant_id   text,
    pk          jsonb NOT NULL,
    old         jsonb,
    new         jsonb,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);

-- Rows the worker could not turn into invalidations (a parameter of the wrong type,
-- a malformed value, retries exhausted), with the reason; pruned after N days.
CREATE TABLE IF NOT EXISTS thorbis.outbox_dead_letters (
    id          bigserial PRIMARY KEY,
    outbox_id   bigint NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    txid        xid8,
    created_at  timestamptz,
    table_name  text,
    operation   text,
    tenant_id   text,
    pk          jsonb,
    old         jsonb,
    new         jsonb
);
CREATE INDEX IF NOT EXISTS outbox_dead_letters_failed_idx
    ON thorbis.outbox_dead_letters (failed_at);
