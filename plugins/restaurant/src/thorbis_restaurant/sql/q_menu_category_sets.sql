-- The items of some categories of some menus with their menu positions ($1 tenant,
-- $2 menu ids, $3 categories). A menu listing none of them has one row with NULL item
-- columns, so an existing menu's empty category differs from no menu.
SELECT m.id AS menu_id, x.category, x.item_id, x.position
  FROM rest.menus m
  LEFT JOIN (
        SELECT e.tenant_id, e.menu_id, i.category, e.item_id, e.position
          FROM rest.menu_entries e
          JOIN rest.menu_items i ON i.tenant_id = e.tenant_id AND i.id = e.item_id
         WHERE e.tenant_id = $1 AND e.menu_id = ANY($2::bigint[])
           AND i.category = ANY($3::text[])
       ) x ON x.tenant_id = m.tenant_id AND x.menu_id = m.id
 WHERE m.tenant_id = $1 AND m.id = ANY($2::bigint[])
 ORDER BY m.id, x.category, x.position, x.item_id
