-- Menu headers by id ($1 tenant, $2 menu ids); absent ids have no row.
SELECT id, location_id, name
  FROM rest.menus
 WHERE tenant_id = $1 AND id = ANY($2::bigint[])
 ORDER BY id
