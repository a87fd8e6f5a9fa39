-- Customers of a tenant by id ($1 tenant, $2 bigint[] ids): the rows of hs.customer hashes.
SELECT id, first_name, last_name, email, phone, customer_type, account_status,
       payment_status, service_area_id, street, city, postal_code, longitude, latitude,
       created_at, updated_at
  FROM hs.customers
 WHERE tenant_id = $1 AND id = ANY($2::bigint[])
 ORDER BY id
