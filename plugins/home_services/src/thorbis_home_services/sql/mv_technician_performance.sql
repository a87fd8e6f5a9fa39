-- hs.technician_performance: each field technician's work orders created in the last 90
-- UTC days. Unique index (tenant_id, technician_id); refreshed concurrently every 4 hours.
--
-- Fixes to the seed: `t.tenant_id` named a column the tenants table does not have (it
-- has `id`), and the tenants join is dropped; joins carry tenant_id; invoices and
-- inspections are aggregated per work order before joining (the seed's double LEFT JOIN
-- multiplied every job by invoices x inspections, inflating job counts, revenue and
-- high-quality counts); technicians without a recent job are kept with zeros (the seed's
-- inner join and WHERE on work_orders dropped them); the average rating is over
-- inspections, high_quality_jobs counts jobs (not inspection rows) rated 4.5 or more on
-- average; void invoices are no revenue; the window is in UTC.
--
-- Invoices and inspections are aggregated only for the window's work orders (the only
-- ones joined): aggregating every invoice ever made cost most of the refresh
-- (bench/mv.py: 530 -> 363 ms at 100k invoices, same rows).
WITH jobs AS (
    SELECT tenant_id, id, assigned_technician_id, status, started_at, completed_at
      FROM hs.work_orders
     WHERE assigned_technician_id IS NOT NULL
       AND created_at >= date_trunc('day', now(), 'UTC') - interval '90 days'
),
revenue AS (
    SELECT tenant_id, work_order_id, sum(total_amount) AS amount
      FROM hs.invoices
     WHERE status <> 'void'
       AND (tenant_id, work_order_id) IN (SELECT tenant_id, id FROM jobs)
     GROUP BY tenant_id, work_order_id
),
quality AS (
    SELECT tenant_id,
           work_order_id,
           sum(overall_rating) AS rating_sum,
           count(*) AS inspections
      FROM hs.quality_control_inspections
     WHERE (tenant_id, work_order_id) IN (SELECT tenant_id, id FROM jobs)
     GROUP BY tenant_id, work_order_id
)
SELECT t.tenant_id,
       t.id AS technician_id,
       t.first_name,
       t.last_name,
       t.role,
       count(j.id) AS total_jobs,
       count(j.id) FILTER (WHERE j.status = 'completed') AS completed_jobs,
       round(count(j.id) FILTER (WHERE j.status = 'completed')::numeric
             / NULLIF(count(j.id), 0) * 100, 2) AS completion_rate,
       (avg(extract(epoch FROM j.completed_at - j.started_at)) / 3600)::double precision
           AS avg_job_hours,
       COALESCE(sum(r.amount), 0) AS revenue_generated,
       (sum(q.rating_sum) / NULLIF(sum(q.inspections), 0))::double precision
           AS avg_quality_rating,
       count(*) FILTER (WHERE q.rating_sum / q.inspections >= 4.5) AS high_quality_jobs
  FROM hs.technicians t
  LEFT JOIN jobs j ON j.tenant_id = t.tenant_id AND j.assigned_technician_id = t.id
  LEFT JOIN revenue r ON r.tenant_id = j.tenant_id AND r.work_order_id = j.id
  LEFT JOIN quality q ON q.tenant_id = j.tenant_id AND q.work_order_id = j.id
 WHERE t.role IN ('technician', 'senior_technician', 'field_supervisor')
 GROUP BY t.tenant_id, t.id
