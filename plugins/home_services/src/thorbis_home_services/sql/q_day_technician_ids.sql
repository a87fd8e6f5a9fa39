-- The technicians of tenant $1 with an appointment on UTC day $2 (an assigned, not
-- cancelled work order): whose schedules the schedule warmer leases. Ids only: the
-- schedules are read after the leases (q_technician_schedules). Served by
-- work_orders_day_idx.
SELECT DISTINCT assigned_technician_id AS id
  FROM hs.work_orders
 WHERE tenant_id = $1
   AND scheduled_day = $2
   AND assigned_technician_id IS NOT NULL
   AND status <> 'cancelled'
 ORDER BY 1
