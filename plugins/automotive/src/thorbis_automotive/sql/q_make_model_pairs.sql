-- The distinct (make, model) pairs of a tenant's vehicles ($1 tenant), at most $2: the
-- make/model sets the vehicles warmer leases before it reads their VINs. Ordered so a
-- cut at the limit is reproducible.
SELECT DISTINCT make, model
  FROM auto.vehicles
 WHERE tenant_id = $1
 ORDER BY make, model
 LIMIT $2
