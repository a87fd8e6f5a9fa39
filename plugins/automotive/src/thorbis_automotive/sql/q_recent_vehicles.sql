-- VINs with a repair order completed since $2 ($1 tenant), most recent first, at most $3.
SELECT vin
  FROM auto.repair_orders
 WHERE tenant_id = $1 AND status = 'completed' AND completed_at >= $2
 GROUP BY vin
 ORDER BY max(completed_at) DESC, vin
 LIMIT $3
