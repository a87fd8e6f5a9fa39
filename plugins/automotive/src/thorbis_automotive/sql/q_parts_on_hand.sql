-- Stock on hand of a tenant's parts ($1 tenant), by part number, at most $2: the whole
-- by-stock set (parts_on_hand covers it without reading the rows).
SELECT part_number, on_hand
  FROM auto.parts
 WHERE tenant_id = $1
 ORDER BY part_number
 LIMIT $2
