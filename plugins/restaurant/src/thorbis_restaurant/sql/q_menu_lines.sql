-- Some menus' items in menu order, with the catalogue columns a line shows ($1 tenant,
-- $2 menu ids).
SELECT e.menu_id, e.item_id, e.position, i.name, i.category, i.base_price, i.cost,
       i.kitchen_station, i.available
  FROM rest.menu_entries e
  JOIN rest.menu_items i ON i.tenant_id = e.tenant_id AND i.id = e.item_id
 WHERE e.tenant_id = $1 AND e.menu_id = ANY($2::bigint[])
 ORDER BY e.menu_id, e.position, e.item_id
