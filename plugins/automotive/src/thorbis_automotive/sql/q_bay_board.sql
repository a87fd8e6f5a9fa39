-- Every bay's row of one UTC day from the view ($1 tenant, $2 date), by bay.
SELECT bay_id, bay_name, repair_orders, labor_hours::float8 AS labor_hours,
       capacity_hours::float8 AS capacity_hours, utilisation::float8 AS utilisation
  FROM auto.bay_utilisation_daily
 WHERE tenant_id = $1 AND day = $2
 ORDER BY bay_id
