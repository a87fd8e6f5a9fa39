-- Completed work orders of some customers ($1 tenant, $2 bigint[] customer ids), for
-- warming several time series in one round trip. Served by work_orders_customer_idx.
SELECT customer_id, id, completed_at
  FROM hs.work_orders
 WHERE tenant_id = $1 AND customer_id = ANY($2::bigint[]) AND status = 'completed'
 ORDER BY customer_id, completed_at, id
