-- Parts of a tenant by part number ($1 tenant, $2 text[] part numbers).
SELECT part_number, description, category, unit_cost, unit_price, on_hand, lead_time_days,
       service_level_z::float8 AS service_level_z, updated_at
  FROM auto.parts
 WHERE tenant_id = $1 AND part_number = ANY($2::text[])
 ORDER BY part_number
