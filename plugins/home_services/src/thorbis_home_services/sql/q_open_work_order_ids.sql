-- The ids of tenant $1's open work orders (not completed, not cancelled): which work
-- orders the work-order warmer leases. Ids only: the rows are read after the leases
-- (q_work_orders). Served by work_orders_status_idx.
SELECT id
  FROM hs.work_orders
 WHERE tenant_id = $1 AND status NOT IN ('completed', 'cancelled')
 ORDER BY id
