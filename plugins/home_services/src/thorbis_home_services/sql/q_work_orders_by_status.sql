-- The work orders of tenant $1 in the statuses $2 (text[]), with what their list score is
-- made of (priority, scheduled time): the members of hs.work_orders_by_status. Served by
-- work_orders_status_idx (tenant_id, status, scheduled_at).
SELECT id, status, priority, scheduled_at
  FROM hs.work_orders
 WHERE tenant_id = $1 AND status = ANY($2::text[])
 ORDER BY status, id
