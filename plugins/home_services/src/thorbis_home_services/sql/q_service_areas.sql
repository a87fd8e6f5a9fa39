-- Some service areas of tenant $1 with their metrics, from the view ($2 bigint[] area
-- ids): the rows of hs.service_area hashes. Served by the view's unique index.
SELECT service_area_id, area_name, zip_codes, center_longitude, center_latitude,
       total_work_orders, avg_travel_time, area_revenue, unique_customers,
       avg_quality_rating, emergency_calls
  FROM hs.service_area_metrics
 WHERE tenant_id = $1 AND service_area_id = ANY($2::bigint[])
 ORDER BY service_area_id
