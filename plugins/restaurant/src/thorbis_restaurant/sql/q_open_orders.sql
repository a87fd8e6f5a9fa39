-- The open (in the kitchen) orders of a tenant, oldest first, at most $2 ($1 tenant).
SELECT id
  FROM rest.orders
 WHERE tenant_id = $1 AND status = 'open'
 ORDER BY placed_at, id
 LIMIT $2
