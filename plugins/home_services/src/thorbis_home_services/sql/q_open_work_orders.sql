-- Every open work order of tenant $1 (not completed, not cancelled): the status lists.
SELECT id, customer_id, assigned_technician_id, service_area_id, status, priority,
       service_type, description, scheduled_at, estimated_minutes, started_at,
       completed_at, travel_time_minutes, longitude, latitude, created_at, updated_at
  FROM hs.work_orders
 WHERE tenant_id = $1 AND status NOT IN ('completed', 'cancelled')
 ORDER BY id
