-- Catalogue items by id ($1 tenant, $2 ids).
SELECT id, name, category, base_price, cost, kitchen_station, prep_minutes, available,
       updated_at
  FROM rest.menu_items
 WHERE tenant_id = $1 AND id = ANY($2::bigint[])
 ORDER BY id
