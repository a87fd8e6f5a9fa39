-- Rows of the summary view for some customers ($1 tenant, $2 bigint[] customer ids).
SELECT customer_id, first_name, last_name, email, phone, customer_type, account_status,
       payment_status, total_work_orders, completed_orders, lifetime_value,
       last_service_at, created_at, updated_at
  FROM hs.customer_summary
 WHERE tenant_id = $1 AND customer_id = ANY($2::bigint[])
 ORDER BY customer_id
