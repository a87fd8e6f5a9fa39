-- Daily sales rows of some items at a location over the 35 days up to a day, from the
-- view ($1 tenant, $2 location, $3 item ids, $4 the last day).
SELECT item_id, sales_day, quantity, revenue
  FROM rest.item_sales_daily
 WHERE tenant_id = $1 AND location_id = $2 AND item_id = ANY($3::bigint[])
   AND sales_day > $4::date - 35 AND sales_day <= $4::date
 ORDER BY item_id, sales_day
