-- The ids of tenant $1's service areas in the metrics view: whose hs.service_area hashes
-- the service-area warmer leases. Ids only: the rows are read after the leases
-- (q_service_areas).
SELECT service_area_id AS id
  FROM hs.service_area_metrics
 WHERE tenant_id = $1
 ORDER BY service_area_id
