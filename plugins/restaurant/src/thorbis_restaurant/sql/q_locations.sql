-- A tenant's locations, at most $2 ($1 tenant).
SELECT id, name
  FROM rest.locations
 WHERE tenant_id = $1
 ORDER BY id
 LIMIT $2
