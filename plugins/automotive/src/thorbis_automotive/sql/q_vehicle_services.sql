-- Completed repair orders of some vehicles ($1 tenant, $2 text[] VINs), oldest first:
-- the service histories (and odometer readings) of those vehicles.
SELECT vin, id AS repair_order_id, service_type,
       (completed_at AT TIME ZONE 'UTC')::date AS completed_on,
       odometer_miles, COALESCE(labor_hours, 0)::float8 AS labor_hours,
       labor_amount + parts_amount AS total_amount
  FROM auto.repair_orders
 WHERE tenant_id = $1 AND vin = ANY($2::text[]) AND status = 'completed'
 ORDER BY vin, completed_at, id
