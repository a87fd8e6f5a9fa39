-- Every customer of tenant $1 with its account status (segment membership, read from the
-- table so that a status change is seen at once) and its lifetime value (the list score,
-- from the summary view: current as of the last refresh; 0 for a customer created since).
SELECT c.id, c.account_status, COALESCE(s.lifetime_value, 0) AS lifetime_value
  FROM hs.customers c
  LEFT JOIN hs.customer_summary s ON s.tenant_id = c.tenant_id AND s.customer_id = c.id
 WHERE c.tenant_id = $1
