-- One location-day of the turnover view ($1 tenant, $2 location, $3 day).
SELECT location_id, day, seatings, covers, tables, turns_per_table, avg_dining_minutes
  FROM rest.table_turnover
 WHERE tenant_id = $1 AND location_id = $2 AND day = $3
