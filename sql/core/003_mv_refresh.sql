-- thorbis-cache core 003: the history of materialized-view refreshes.
--
-- One row per refresh attempt (thorbis_cache.postgres.mv_refresh.refresh_view), written in
-- its own transaction after the refresh's transaction ended, so a failed refresh is
-- recorded with PostgreSQL's message (the refresh itself rolled back) and a refresh that
-- found another refresher holding the view's advisory lock is recorded as skipped_locked.
-- `rows` is the view's row count after an ok refresh (NULL otherwise); `concurrently` says
-- whether REFRESH ... CONCURRENTLY was used (a never-populated view is refreshed plainly).

CREATE SCHEMA IF NOT EXISTS thorbis;

CREATE TABLE IF NOT EXISTS thorbis.mv_refresh_history (
    id            bigserial PRIMARY KEY,
    view          text NOT NULL,
    plugin        text NOT NULL,
    trigger       text NOT NULL CHECK (trigger IN ('cron', 'smart', 'manual')),
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    duration_ms   double precision NOT NULL,
    rows          bigint,
    "concurrently" boolean NOT NULL,  -- quoted: CONCURRENTLY is a reserved word
    outcome       text NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped_locked')),
    error         text
);

-- `mv status` reads the newest row of each view.
CREATE INDEX IF NOT EXISTS mv_refresh_history_view_started
    ON thorbis.mv_refresh_history (view, started_at DESC);
