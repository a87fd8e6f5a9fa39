-- One UTC day of a tenant's invoices from the view ($1 tenant, $2 date).
SELECT report_date, invoice_count, gross_revenue, total_tax, net_revenue, paid_invoices,
       collected_revenue, avg_invoice_amount, max_invoice_amount, min_invoice_amount
  FROM hs.financial_daily
 WHERE tenant_id = $1 AND report_date = $2
