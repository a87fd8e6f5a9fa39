-- The ids of the $2 customers of tenant $1 of highest lifetime value (ties by id, so the
-- choice is deterministic), from the summary view: which customers the customer warmer
-- leases first. Ids only: the rows are read after the leases (q_customers,
-- q_customer_summaries, q_service_histories). Served by the view's
-- (tenant_id, lifetime_value) index.
SELECT customer_id AS id
  FROM hs.customer_summary
 WHERE tenant_id = $1
 ORDER BY lifetime_value DESC, customer_id
 LIMIT $2
