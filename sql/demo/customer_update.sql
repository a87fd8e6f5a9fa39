-- customer_update: a write by the application in the demo's fill-race scene.
--
-- $1  tenant_id (text)
-- $2  customer id (bigint)
-- $3  new email (text)
-- $4  new account_status (text)
--
-- Updates at most one row (primary-key match); the demo then invalidates the
-- customer's cache key, as an application must after a committed change.
UPDATE customers
SET email = $3, account_status = $4
WHERE tenant_id = $1 AND id = $2
