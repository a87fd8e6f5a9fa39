-- The (slot, table) pairs taken at some locations on some days ($1 tenant, $2 location
-- ids, $3 days): every reservation that holds its table (cancelled and no-show ones do
-- not). A batch asks for locations x days; the caller keeps the pairs it wants.
SELECT location_id, day, to_char(slot, 'HH24:MI') AS slot, table_id
  FROM rest.reservations
 WHERE tenant_id = $1 AND location_id = ANY($2::bigint[]) AND day = ANY($3::date[])
   AND status IN ('booked', 'seated', 'completed')
