-- The locations with an open order, ids only, at most $2 ($1 tenant): whose kitchen
-- display the kitchen warmer warms.
SELECT DISTINCT location_id
  FROM rest.orders
 WHERE tenant_id = $1 AND status = 'open'
 ORDER BY location_id
 LIMIT $2
