-- The active menus of some locations ($1 tenant, $2 location ids): one row per
-- (location, menu); a location without an active menu has one row with a NULL menu_id,
-- so an existing location with no menu (an empty set) differs from no location.
SELECT l.id AS location_id, m.id AS menu_id
  FROM rest.locations l
  LEFT JOIN rest.menus m
    ON m.tenant_id = l.tenant_id AND m.location_id = l.id AND m.active
 WHERE l.tenant_id = $1 AND l.id = ANY($2::bigint[])
 ORDER BY l.id, m.id
