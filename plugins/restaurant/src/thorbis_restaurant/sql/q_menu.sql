-- One menu's header ($1 tenant, $2 menu id).
SELECT id, location_id, name, active
  FROM rest.menus
 WHERE tenant_id = $1 AND id = $2
