-- rest.table_turnover: completed seatings per location and day (the last 90 days), covers,
-- mean minutes at the table, and turns per table (seatings / active tables).
-- Unique index (tenant_id, location_id, day); refreshed concurrently hourly.
--
-- Seatings are aggregated per (location, day) and tables per location in separate CTEs
-- before the join, so neither multiplies the other. A location whose tables were all
-- deactivated shows 0 tables and 0 turns rather than dividing by zero.
WITH seatings AS (
    SELECT tenant_id, location_id, day,
           count(*) AS seatings,
           sum(party_size)::bigint AS covers,
           round((avg(extract(epoch FROM left_at - seated_at)) / 60)::numeric, 1)
               AS avg_dining_minutes
      FROM rest.reservations
     WHERE status = 'completed' AND seated_at IS NOT NULL AND left_at IS NOT NULL
       AND day >= (now() AT TIME ZONE 'UTC')::date - 90
     GROUP BY tenant_id, location_id, day
), active_tables AS (
    SELECT tenant_id, location_id, count(*) AS tables
      FROM rest.dining_tables
     WHERE active
     GROUP BY tenant_id, location_id
)
SELECT s.tenant_id,
       s.location_id,
       s.day,
       s.seatings,
       s.covers,
       COALESCE(t.tables, 0) AS tables,
       CASE WHEN COALESCE(t.tables, 0) = 0 THEN 0::numeric
            ELSE round(s.seatings::numeric / t.tables, 2) END AS turns_per_table,
       s.avg_dining_minutes
  FROM seatings s
  LEFT JOIN active_tables t ON t.tenant_id = s.tenant_id AND t.location_id = s.location_id
