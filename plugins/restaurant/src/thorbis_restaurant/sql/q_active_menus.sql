-- Active menus of a tenant, at most $2 ($1 tenant).
SELECT id, location_id
  FROM rest.menus
 WHERE tenant_id = $1 AND active
 ORDER BY id
 LIMIT $2
