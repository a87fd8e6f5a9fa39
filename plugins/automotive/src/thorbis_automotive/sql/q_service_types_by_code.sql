-- Some service types of a tenant ($1 tenant, $2 text[] codes), by code: the entities of
-- auto.service_type (one for a read-through, the leased ones for a warm batch).
SELECT code, name, interval_miles, interval_days, standard_hours::float8 AS standard_hours,
       labor_rate
  FROM auto.service_types
 WHERE tenant_id = $1 AND code = ANY($2::text[])
 ORDER BY code
