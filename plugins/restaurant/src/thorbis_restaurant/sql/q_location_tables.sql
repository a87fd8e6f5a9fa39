-- The active tables of some locations ($1 tenant, $2 location ids). A location without
-- an active table has one row with NULL table columns, so an empty grid differs from no
-- location.
SELECT l.id AS location_id, t.id AS table_id, t.seats
  FROM rest.locations l
  LEFT JOIN rest.dining_tables t
    ON t.tenant_id = l.tenant_id AND t.location_id = l.id AND t.active
 WHERE l.tenant_id = $1 AND l.id = ANY($2::bigint[])
 ORDER BY l.id, t.id
