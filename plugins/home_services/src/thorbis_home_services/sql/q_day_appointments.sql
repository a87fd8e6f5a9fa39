-- The appointments of UTC day $2 of tenant $1: assigned, not cancelled work orders.
-- Served by work_orders_day_idx (tenant_id, scheduled_day).
SELECT id, customer_id, assigned_technician_id, service_area_id, status, priority,
       service_type, description, scheduled_at, estimated_minutes, started_at,
       completed_at, travel_time_minutes, longitude, latitude, created_at, updated_at
  FROM hs.work_orders
 WHERE tenant_id = $1
   AND scheduled_day = $2
   AND assigned_technician_id IS NOT NULL
   AND status <> 'cancelled'
 ORDER BY assigned_technician_id, scheduled_at, id
