-- work_order_priority: the host application's write in the demo's stale-fill scene.
--
-- $1  tenant_id (text)
-- $2  work order id (bigint)
-- $3  new priority (text: emergency, urgent, high, standard or low)
--
-- Updates at most one row of the home_services plugin's hs.work_orders (primary-key
-- match on (tenant_id, id)) and stamps updated_at. The demo then deletes the work
-- order's cache entry, as an application must after a committed change.
UPDATE hs.work_orders
SET priority = $3, updated_at = now()
WHERE tenant_id = $1 AND id = $2
