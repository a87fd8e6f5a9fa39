-- fitness_studio tables, in the plugin's own PostgreSQL schema "fit".
--
-- Idempotent: applied at every `thorbis-cache db init` and twice in a row by the
-- contract kit, so every statement is CREATE ... IF NOT EXISTS.
-- Multi-tenant: every table carries tenant_id (the cache's tenant id) first in its
-- primary key, so one tenant's rows are found by an index and can never be confused
-- with another's; the invalidation engine reads it from each changed row.

CREATE SCHEMA IF NOT EXISTS fit;

CREATE TABLE IF NOT EXISTS fit.studios (
    tenant_id  text             NOT NULL,
    id         bigint           NOT NULL,
    name       text             NOT NULL,
    longitude  double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    latitude   double precision NOT NULL CHECK (latitude BETWEEN -85.05112878 AND 85.05112878),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS fit.members (
    tenant_id  text    NOT NULL,
    id         bigint  NOT NULL,
    name       text    NOT NULL,
    email      text    NOT NULL,
    plan       text    NOT NULL CHECK (plan IN ('basic', 'unlimited', 'class_pack')),
    active     boolean NOT NULL DEFAULT true,
    joined_on  date    NOT NULL,
    credits    integer NOT NULL DEFAULT 0 CHECK (credits >= 0),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS fit.class_sessions (
    tenant_id  text        NOT NULL,
    id         bigint      NOT NULL,
    studio_id  bigint      NOT NULL,
    title      text        NOT NULL,
    coach      text        NOT NULL,
    starts_at  timestamptz NOT NULL,
    minutes    integer     NOT NULL CHECK (minutes > 0),
    capacity   integer     NOT NULL CHECK (capacity > 0),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, studio_id) REFERENCES fit.studios (tenant_id, id)
);

CREATE INDEX IF NOT EXISTS class_sessions_by_studio_day
    ON fit.class_sessions (tenant_id, studio_id, starts_at);

CREATE TABLE IF NOT EXISTS fit.bookings (
    tenant_id  text        NOT NULL,
    session_id bigint      NOT NULL,
    member_id  bigint      NOT NULL,
    status     text        NOT NULL CHECK (status IN ('booked', 'waitlisted', 'cancelled')),
    booked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id, member_id),
    FOREIGN KEY (tenant_id, session_id) REFERENCES fit.class_sessions (tenant_id, id),
    FOREIGN KEY (tenant_id, member_id) REFERENCES fit.members (tenant_id, id)
);

CREATE INDEX IF NOT EXISTS bookings_by_member ON fit.bookings (tenant_id, member_id);
