-- VINs and years of one make and model ($1 tenant, $2 make, $3 model).
SELECT vin, model_year
  FROM auto.vehicles
 WHERE tenant_id = $1 AND make = $2 AND model = $3
 ORDER BY vin
