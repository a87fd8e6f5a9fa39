-- Kitchen tickets of some orders, one row per line ($1 tenant, $2 order ids). An order
-- without lines has one row with NULL line columns: it exists, with nothing to cook.
SELECT o.id AS order_id, o.location_id, o.table_label, o.priority, o.placed_at,
       i.line, i.item_id, m.name, i.quantity, i.station, i.done
  FROM rest.orders o
  LEFT JOIN rest.order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id
  LEFT JOIN rest.menu_items m ON m.tenant_id = i.tenant_id AND m.id = i.item_id
 WHERE o.tenant_id = $1 AND o.id = ANY($2::bigint[])
 ORDER BY o.id, i.line
