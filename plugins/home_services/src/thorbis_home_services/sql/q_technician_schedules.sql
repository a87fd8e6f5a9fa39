-- Some technicians' appointments of one UTC day ($1 tenant, $2 day, $3 bigint[]
-- technician ids): their not cancelled work orders with the start time, the members and
-- scores of hs.technician_schedule. Served by work_orders_technician_idx
-- (tenant_id, assigned_technician_id, scheduled_day).
SELECT assigned_technician_id, id, scheduled_at
  FROM hs.work_orders
 WHERE tenant_id = $1
   AND scheduled_day = $2
   AND assigned_technician_id = ANY($3::bigint[])
   AND status <> 'cancelled'
 ORDER BY assigned_technician_id, scheduled_at, id
