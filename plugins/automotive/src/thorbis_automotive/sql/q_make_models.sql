-- Make, model and year of a tenant's vehicles ($1 tenant), at most $2: the make/model
-- sets. Ordered so a cut at the limit is reproducible.
SELECT vin, make, model, model_year
  FROM auto.vehicles
 WHERE tenant_id = $1
 ORDER BY make, model, vin
 LIMIT $2
