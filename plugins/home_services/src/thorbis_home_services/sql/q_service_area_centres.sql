-- Every service area of tenant $1 at its centre, from the table (not the metrics view):
-- the members of hs.service_area_geo, current as soon as an area is added or moved.
SELECT id, center_longitude, center_latitude
  FROM hs.service_areas
 WHERE tenant_id = $1
 ORDER BY id
