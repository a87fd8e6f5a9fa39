-- Every part of a tenant ($1), by part number, at most $2.
SELECT part_number, description, category, unit_cost, unit_price, on_hand, lead_time_days,
       service_level_z::float8 AS service_level_z, updated_at
  FROM auto.parts
 WHERE tenant_id = $1
 ORDER BY part_number
 LIMIT $2
