-- The (slot, table) pairs taken at a location on a day ($1 tenant, $2 location, $3 day):
-- every reservation that holds its table (cancelled and no-show ones do not).
SELECT to_char(slot, 'HH24:MI') AS slot, table_id
  FROM rest.reservations
 WHERE tenant_id = $1 AND location_id = $2 AND day = $3
   AND status IN ('booked', 'seated', 'completed')
