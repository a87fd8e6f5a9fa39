-- Vehicles of a tenant by VIN ($1 tenant, $2 text[] VINs).
SELECT vin, make, model, model_year, odometer_miles, created_at, updated_at
  FROM auto.vehicles
 WHERE tenant_id = $1 AND vin = ANY($2::text[])
 ORDER BY vin
