-- Units issued per part and UTC day ($1 tenant, $2 text[] part numbers) in [$3, $4):
-- the daily demand series of the reorder point (thorbis_automotive.inventory).
SELECT part_number, (moved_at AT TIME ZONE 'UTC')::date AS day, sum(-quantity)::bigint AS units
  FROM auto.stock_movements
 WHERE tenant_id = $1 AND part_number = ANY($2::text[]) AND reason = 'issue'
   AND moved_at >= $3 AND moved_at < $4
 GROUP BY part_number, (moved_at AT TIME ZONE 'UTC')::date
