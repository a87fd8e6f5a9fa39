-- hs.service_area_metrics: each service area's work orders created in the last 90 UTC
-- days, with the area's centre for the geo index. Unique index (tenant_id,
-- service_area_id); refreshed concurrently daily at 02:00.
--
-- Fixes to the seed: `tenant_id` was ambiguous (service_areas, work_orders and customers
-- all have it) and is now sa.tenant_id; `service_area_id` is the area's own key
-- (sa.id); joins carry tenant_id; invoices and inspections are aggregated per work order
-- before joining (the seed's fan-out inflated order counts, revenue, emergency calls and
-- weighted the ratings); the customers join is gone (the distinct customer ids are on
-- the work orders); areas without recent work orders are kept with zeros; revenue is 0,
-- not NULL; void invoices are no revenue; the window is in UTC.
--
-- Invoices and inspections are aggregated only for the window's work orders (the only
-- ones joined), not for every invoice ever made (bench/mv.py).
WITH orders AS (
    SELECT tenant_id, id, service_area_id, customer_id, priority, travel_time_minutes
      FROM hs.work_orders
     WHERE service_area_id IS NOT NULL
       AND created_at >= date_trunc('day', now(), 'UTC') - interval '90 days'
),
revenue AS (
    SELECT tenant_id, work_order_id, sum(total_amount) AS amount
      FROM hs.invoices
     WHERE status <> 'void'
       AND (tenant_id, work_order_id) IN (SELECT tenant_id, id FROM orders)
     GROUP BY tenant_id, work_order_id
),
quality AS (
    SELECT tenant_id,
           work_order_id,
           sum(overall_rating) AS rating_sum,
           count(*) AS inspections
      FROM hs.quality_control_inspections
     WHERE (tenant_id, work_order_id) IN (SELECT tenant_id, id FROM orders)
     GROUP BY tenant_id, work_order_id
)
SELECT sa.tenant_id,
       sa.id AS service_area_id,
       sa.name AS area_name,
       sa.zip_codes,
       sa.center_longitude,
       sa.center_latitude,
       count(o.id) AS total_work_orders,
       avg(o.travel_time_minutes)::double precision AS avg_travel_time,
       COALESCE(sum(r.amount), 0) AS area_revenue,
       count(DISTINCT o.customer_id) AS unique_customers,
       (sum(q.rating_sum) / NULLIF(sum(q.inspections), 0))::double precision
           AS avg_quality_rating,
       count(o.id) FILTER (WHERE o.priority = 'emergency') AS emergency_calls
  FROM hs.service_areas sa
  LEFT JOIN orders o ON o.tenant_id = sa.tenant_id AND o.service_area_id = sa.id
  LEFT JOIN revenue r ON r.tenant_id = o.tenant_id AND r.work_order_id = o.id
  LEFT JOIN quality q ON q.tenant_id = o.tenant_id AND q.work_order_id = o.id
 GROUP BY sa.tenant_id, sa.id
