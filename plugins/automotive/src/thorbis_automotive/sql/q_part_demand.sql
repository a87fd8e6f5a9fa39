-- One part's weekly demand from the view ($1 tenant, $2 part number), oldest week first.
SELECT week_start, issued, movements
  FROM auto.parts_demand_weekly
 WHERE tenant_id = $1 AND part_number = $2
 ORDER BY week_start
