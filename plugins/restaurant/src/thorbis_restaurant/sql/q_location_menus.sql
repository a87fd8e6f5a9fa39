-- The active menus of a location ($1 tenant, $2 location).
SELECT id
  FROM rest.menus
 WHERE tenant_id = $1 AND location_id = $2 AND active
 ORDER BY id
