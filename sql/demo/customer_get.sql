-- customer_get: one customer of one tenant, the demo cache's loader query.
--
-- $1  tenant_id (text)
-- $2  customer id (bigint)
--
-- Returns zero or one row (primary-key lookup on customers (tenant_id, id)). The
-- column list matches the fields of thorbis_cache.demo.Customer, in order.
SELECT id, name, email, phone, street, city, postal_code, customer_type,
       account_status, payment_status, lifetime_value, service_count, last_service_date
FROM customers
WHERE tenant_id = $1 AND id = $2
