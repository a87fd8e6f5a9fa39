-- hs.financial_daily: a tenant's invoices per UTC day, from UTC midnight 90 days ago on.
-- Unique index (tenant_id, report_date); refreshed concurrently daily at 01:00.
--
-- Fixes to the seed: days and the 90-day window are UTC (the seed's date_trunc('day',
-- created_at) and CURRENT_DATE followed the TimeZone of whichever session refreshed the
-- view, so two refreshes could bucket the same invoice differently); the report date is a
-- date, not a midnight timestamp; void invoices are not revenue. Also changed: the
-- average is rounded to cents.
SELECT tenant_id,
       (created_at AT TIME ZONE 'UTC')::date AS report_date,
       count(*) AS invoice_count,
       sum(subtotal_amount) AS gross_revenue,
       sum(tax_amount) AS total_tax,
       sum(total_amount) AS net_revenue,
       count(*) FILTER (WHERE status = 'paid') AS paid_invoices,
       COALESCE(sum(total_amount) FILTER (WHERE status = 'paid'), 0) AS collected_revenue,
       round(avg(total_amount), 2) AS avg_invoice_amount,
       max(total_amount) AS max_invoice_amount,
       min(total_amount) AS min_invoice_amount
  FROM hs.invoices
 WHERE status <> 'void'
   AND created_at >= date_trunc('day', now(), 'UTC') - interval '90 days'
 GROUP BY tenant_id, (created_at AT TIME ZONE 'UTC')::date
