-- auto.bay_utilisation_daily: per bay and UTC day, the completed repair orders and
-- their labor hours against the bay's capacity, over the last 90 days. Unique index
-- (tenant_id, bay_id, day); refreshed concurrently every hour, or after 50 changes of
-- repair orders and at most 2 hours stale.
--
-- Repair orders are aggregated per (bay, day) before the join to bays (one row per bay,
-- so the join cannot multiply them); the join is on (tenant_id, id), never on id alone.
WITH work AS (
    SELECT tenant_id,
           bay_id,
           (completed_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS repair_orders,
           COALESCE(sum(labor_hours), 0) AS labor_hours
      FROM auto.repair_orders
     WHERE status = 'completed'
       AND bay_id IS NOT NULL
       AND completed_at >= now() - interval '90 days'
     GROUP BY tenant_id, bay_id, (completed_at AT TIME ZONE 'UTC')::date
)
SELECT w.tenant_id,
       w.bay_id,
       b.name AS bay_name,
       w.day,
       w.repair_orders,
       w.labor_hours,
       b.hours_per_day AS capacity_hours,
       round(w.labor_hours / b.hours_per_day, 4) AS utilisation
  FROM work w
  JOIN auto.bays b ON b.tenant_id = w.tenant_id AND b.id = w.bay_id
