-- Work orders of a tenant by id ($1 tenant, $2 bigint[] ids).
SELECT id, customer_id, assigned_technician_id, service_area_id, status, priority,
       service_type, description, scheduled_at, estimated_minutes, started_at,
       completed_at, travel_time_minutes, longitude, latitude, created_at, updated_at
  FROM hs.work_orders
 WHERE tenant_id = $1 AND id = ANY($2::bigint[])
 ORDER BY id
