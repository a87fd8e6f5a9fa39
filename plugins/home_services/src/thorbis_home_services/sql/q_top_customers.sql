-- The $2 customers of tenant $1 of highest lifetime value (ties by id, so the choice is
-- deterministic), from the summary view: what the customer warmer puts in hashes first.
SELECT c.id, c.first_name, c.last_name, c.email, c.phone, c.customer_type,
       c.account_status, c.payment_status, c.service_area_id, c.street, c.city,
       c.postal_code, c.longitude, c.latitude, c.created_at, c.updated_at
  FROM hs.customer_summary s
  JOIN hs.customers c ON c.tenant_id = s.tenant_id AND c.id = s.customer_id
 WHERE s.tenant_id = $1
 ORDER BY s.lifetime_value DESC, c.id
 LIMIT $2
