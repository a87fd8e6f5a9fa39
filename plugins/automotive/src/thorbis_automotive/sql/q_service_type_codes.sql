-- The service type codes of a tenant ($1), by code: what the labor warmer leases before
-- it reads any row (the primary key answers it alone).
SELECT code
  FROM auto.service_types
 WHERE tenant_id = $1
 ORDER BY code
