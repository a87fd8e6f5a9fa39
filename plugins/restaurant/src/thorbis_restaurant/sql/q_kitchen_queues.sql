-- What the kitchen display of some locations holds ($1 tenant, $2 location ids,
-- $3 stations): one row per (station, open order with a line still to cook there),
-- with what its queue score is computed from. A location with nothing queued at these
-- stations has one row with NULL order columns, so an empty queue differs from no
-- location. Open orders are found through orders_open_idx.
SELECT l.id AS location_id, q.station, q.order_id, q.priority, q.placed_at
  FROM rest.locations l
  LEFT JOIN (
        SELECT DISTINCT o.tenant_id, o.location_id, i.station, o.id AS order_id,
               o.priority, o.placed_at
          FROM rest.orders o
          JOIN rest.order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id
         WHERE o.tenant_id = $1 AND o.location_id = ANY($2::bigint[]) AND o.status = 'open'
           AND NOT i.done AND i.station = ANY($3::text[])
       ) q ON q.tenant_id = l.tenant_id AND q.location_id = l.id
 WHERE l.tenant_id = $1 AND l.id = ANY($2::bigint[])
 ORDER BY l.id, q.station, q.order_id
