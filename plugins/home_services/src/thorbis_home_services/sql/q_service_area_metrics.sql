-- Every service area of tenant $1 with its metrics and centre, from the view.
SELECT service_area_id, area_name, zip_codes, center_longitude, center_latitude,
       total_work_orders, avg_travel_time, area_revenue, unique_customers,
       avg_quality_rating, emergency_calls
  FROM hs.service_area_metrics
 WHERE tenant_id = $1
 ORDER BY service_area_id
