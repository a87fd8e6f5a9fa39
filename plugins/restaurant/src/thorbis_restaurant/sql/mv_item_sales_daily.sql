-- rest.item_sales_daily: units and revenue of each item per location and UTC day, from
-- UTC midnight 90 days ago on. Unique index (tenant_id, location_id, item_id, sales_day):
-- exactly the GROUP BY columns. Refreshed concurrently every 30 minutes, or earlier
-- after 500 changes of its sources.
--
-- Days are UTC (`placed_at AT TIME ZONE 'UTC'`), so every refresh buckets an order on
-- the same day whatever the session's TimeZone. Cancelled orders are not sales. One
-- order line joins one order, so nothing is counted twice.
SELECT i.tenant_id,
       i.location_id,
       i.item_id,
       (o.placed_at AT TIME ZONE 'UTC')::date AS sales_day,
       sum(i.quantity)::bigint AS quantity,
       sum(i.quantity * i.unit_price) AS revenue,
       count(DISTINCT i.order_id) AS orders
  FROM rest.order_items i
  JOIN rest.orders o ON o.tenant_id = i.tenant_id AND o.id = i.order_id
 WHERE o.status <> 'cancelled'
   AND o.placed_at >= date_trunc('day', now(), 'UTC') - interval '90 days'
 GROUP BY i.tenant_id, i.location_id, i.item_id, (o.placed_at AT TIME ZONE 'UTC')::date
