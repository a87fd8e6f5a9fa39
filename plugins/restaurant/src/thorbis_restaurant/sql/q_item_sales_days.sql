-- Daily sales rows of (location, item) pairs over the 35 days up to a day, from the
-- view ($1 tenant, $2 location ids and $3 item ids, paired by position, $4 the last day).
-- Pairs, not locations x items: a batch of menus of several locations asks each location
-- for its own items only.
SELECT location_id, item_id, sales_day, quantity, revenue
  FROM rest.item_sales_daily
 WHERE tenant_id = $1
   AND (location_id, item_id) IN (SELECT * FROM unnest($2::bigint[], $3::bigint[]))
   AND sales_day > $4::date - 35 AND sales_day <= $4::date
 ORDER BY location_id, item_id, sales_day
