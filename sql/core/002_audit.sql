-- thorbis-cache core 002: the hash-chained audit log (invalidations, later MV refreshes).
--
-- Each record's `hash` is SHA-256(prev_hash || canonical JSON of the record), and
-- `prev_hash` is the previous record's hash (32 zero bytes for the first), so editing or
-- deleting any row breaks the chain at that row (thorbis_cache.postgres.audit.verify).
-- `id` is not a sequence: appenders assign previous id + 1 under an advisory lock, so ids
-- have no gaps (a missing id is a deleted record) and the chain never forks.

CREATE SCHEMA IF NOT EXISTS thorbis;

CREATE TABLE IF NOT EXISTS thorbis.audit_log (
    id         bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    kind       text NOT NULL,
    tenant     text,
    detail     jsonb NOT NULL,
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL
);
