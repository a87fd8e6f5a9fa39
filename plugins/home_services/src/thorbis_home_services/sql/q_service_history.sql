-- A customer's completed work orders with their completion time ($1 tenant, $2 customer):
-- the time series of hs.customer_history. Served by work_orders_customer_idx.
SELECT id, completed_at
  FROM hs.work_orders
 WHERE tenant_id = $1 AND customer_id = $2 AND status = 'completed'
 ORDER BY completed_at, id
