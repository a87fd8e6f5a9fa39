-- Monthly labor history of some service types from the view ($1 tenant, $2 text[]).
SELECT service_type, month, jobs, labor_hours::float8 AS labor_hours
  FROM auto.labor_monthly
 WHERE tenant_id = $1 AND service_type = ANY($2::text[])
