-- Every service type of a tenant ($1), by code.
SELECT code, name, interval_miles, interval_days, standard_hours::float8 AS standard_hours,
       labor_rate
  FROM auto.service_types
 WHERE tenant_id = $1
 ORDER BY code
