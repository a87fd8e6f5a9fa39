-- The items of some menus with their categories, ids only: what the menus warmer
-- warms besides the menus ($1 tenant, $2 menu ids).
SELECT e.menu_id, e.item_id, i.category
  FROM rest.menu_entries e
  JOIN rest.menu_items i ON i.tenant_id = e.tenant_id AND i.id = e.item_id
 WHERE e.tenant_id = $1 AND e.menu_id = ANY($2::bigint[])
 ORDER BY e.menu_id, e.item_id
