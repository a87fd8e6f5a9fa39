-- hs.customer_summary: one row per customer with work order counts, lifetime value and
-- the last completed service. Unique index (tenant_id, customer_id); refreshed
-- concurrently every 15 minutes (views.py).
--
-- Fixes to the seed (README "Seed SQL fixes"): joins carry tenant_id; work orders and
-- invoices are aggregated before joining (the seed's work_orders x invoices join counted
-- a work order once per invoice); lifetime value is 0, not NULL, without invoices; void
-- invoices are no revenue; the last service is the last *completed* order's completion,
-- not the creation of any order; no join to a tenants table of another schema.
WITH orders AS (
    SELECT tenant_id,
           customer_id,
           count(*) AS total_work_orders,
           count(*) FILTER (WHERE status = 'completed') AS completed_orders,
           max(completed_at) FILTER (WHERE status = 'completed') AS last_service_at
      FROM hs.work_orders
     GROUP BY tenant_id, customer_id
),
revenue AS (
    SELECT i.tenant_id,
           wo.customer_id,
           sum(i.total_amount) AS lifetime_value
      FROM hs.invoices i
      JOIN hs.work_orders wo ON wo.tenant_id = i.tenant_id AND wo.id = i.work_order_id
     WHERE i.status <> 'void'
     GROUP BY i.tenant_id, wo.customer_id
)
SELECT c.tenant_id,
       c.id AS customer_id,
       c.first_name,
       c.last_name,
       c.email,
       c.phone,
       c.customer_type,
       c.account_status,
       c.payment_status,
       COALESCE(o.total_work_orders, 0) AS total_work_orders,
       COALESCE(o.completed_orders, 0) AS completed_orders,
       COALESCE(r.lifetime_value, 0)::numeric(14, 2) AS lifetime_value,
       o.last_service_at,
       c.created_at,
       c.updated_at
  FROM hs.customers c
  LEFT JOIN orders o ON o.tenant_id = c.tenant_id AND o.customer_id = c.id
  LEFT JOIN revenue r ON r.tenant_id = c.tenant_id AND r.customer_id = c.id
