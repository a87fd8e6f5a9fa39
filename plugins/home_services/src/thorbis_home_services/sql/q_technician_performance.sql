-- One technician's row of the performance view ($1 tenant, $2 technician id).
SELECT technician_id, first_name, last_name, role, total_jobs, completed_jobs,
       completion_rate, avg_job_hours, revenue_generated, avg_quality_rating,
       high_quality_jobs
  FROM hs.technician_performance
 WHERE tenant_id = $1 AND technician_id = $2
