-- thorbis-cache core 004: what the materialized-view scheduler needs to know between ticks.
--
-- thorbis.table_changes counts, per table, the outbox rows the worker has taken off the
-- outbox (applied or dead-lettered): the worker adds a batch's counts in the batch's own
-- transaction, so a row is counted exactly once, either still in thorbis.outbox or here.
-- A view's pending changes are sum(changes + outbox backlog) over its sources minus the
-- marks taken when it was last refreshed (thorbis_cache.postgres.mv_refresh).
-- A refreshed view counts one change under its own name, so views that depend on it see
-- its refreshes as changes.
--
-- thorbis.mv_state holds one row per view: when its data was last refreshed, the marks,
-- the last cron fire handled, and consecutive failures (for backoff). It is written in
-- the refresh's own transaction (under the view's advisory lock), so two workers never
-- act on the same cron fire twice.

CREATE SCHEMA IF NOT EXISTS thorbis;

CREATE TABLE IF NOT EXISTS thorbis.table_changes (
    table_name  text PRIMARY KEY,
    changes     bigint NOT NULL DEFAULT 0 CHECK (changes >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS thorbis.mv_state (
    view              text PRIMARY KEY,
    plugin            text NOT NULL,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    -- The data's "as of": the start of the last ok refresh's transaction.
    refreshed_at      timestamptz,
    last_duration_ms  double precision,
    -- {"<source table>": changes counted when the last ok refresh started}
    change_marks      jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The newest cron fire time that was handled (a refresh ran for it).
    cron_fired_at     timestamptz,
    failures          integer NOT NULL DEFAULT 0,
    last_failed_at    timestamptz,
    last_error        text,
    -- Set with an ok refresh of a view that has tags, cleared once they are invalidated.
    tags_pending      boolean NOT NULL DEFAULT false
);
