-- fit.studio_occupancy: per tenant, studio and day, how full the classes were.
-- One row per (tenant_id, studio_id, day): the unique index on those three columns is
-- what lets the scheduler use REFRESH MATERIALIZED VIEW CONCURRENTLY (readers are
-- never blocked). The day is the UTC calendar day of the session start. Bookings are
-- counted per session first, so a session's capacity is summed once, not once per
-- booking row of the join.
WITH per_session AS (
    SELECT s.tenant_id,
           s.studio_id,
           s.starts_at,
           s.capacity,
           count(b.member_id) FILTER (WHERE b.status = 'booked')     AS booked,
           count(b.member_id) FILTER (WHERE b.status = 'waitlisted') AS waitlisted
    FROM fit.class_sessions AS s
    LEFT JOIN fit.bookings AS b
           ON b.tenant_id = s.tenant_id AND b.session_id = s.id
    GROUP BY s.tenant_id, s.id
)
SELECT tenant_id,
       studio_id,
       (starts_at AT TIME ZONE 'UTC')::date AS day,
       count(*)::integer                    AS sessions,
       sum(capacity)::integer               AS capacity,
       sum(booked)::integer                 AS booked,
       sum(waitlisted)::integer             AS waitlisted
FROM per_session
GROUP BY tenant_id, studio_id, (starts_at AT TIME ZONE 'UTC')::date
