-- The part numbers of a tenant ($1), by part number, at most $2: what the parts warmer
-- leases before it reads any row (the primary key answers it alone).
SELECT part_number
  FROM auto.parts
 WHERE tenant_id = $1
 ORDER BY part_number
 LIMIT $2
