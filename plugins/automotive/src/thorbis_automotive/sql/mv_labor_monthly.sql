-- auto.labor_monthly: completed jobs and labor hours per service type and calendar
-- month (1-12, UTC) over the last three years: the input of the seasonal labor factors
-- (thorbis_automotive.labor). Unique index (tenant_id, service_type, month); refreshed
-- concurrently daily at 03:00.
--
-- Orders without recorded labor hours are left out (they would count as 0-hour jobs
-- and pull the month's mean down).
SELECT tenant_id,
       service_type,
       extract(month FROM completed_at AT TIME ZONE 'UTC')::integer AS month,
       count(*) AS jobs,
       sum(labor_hours) AS labor_hours
  FROM auto.repair_orders
 WHERE status = 'completed'
   AND labor_hours IS NOT NULL
   AND completed_at >= now() - interval '3 years'
 GROUP BY tenant_id, service_type, extract(month FROM completed_at AT TIME ZONE 'UTC')::integer
