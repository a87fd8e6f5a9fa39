-- auto.parts_demand_weekly: units issued to jobs per part and UTC week (weeks start on
-- Monday), over the last 52 weeks. Unique index (tenant_id, part_number, week_start);
-- refreshed concurrently every 6 hours, or after 500 stock movements.
--
-- Demand is issues only (reason 'issue', stored as negative quantities): receipts,
-- returns and adjustments change stock, not demand. Weeks are UTC so two refreshes
-- from sessions of different TimeZone bucket a movement alike.
SELECT tenant_id,
       part_number,
       date_trunc('week', moved_at AT TIME ZONE 'UTC')::date AS week_start,
       sum(-quantity)::bigint AS issued,
       count(*) AS movements
  FROM auto.stock_movements
 WHERE reason = 'issue'
   AND moved_at >= date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '51 weeks'
 GROUP BY tenant_id, part_number, date_trunc('week', moved_at AT TIME ZONE 'UTC')::date
