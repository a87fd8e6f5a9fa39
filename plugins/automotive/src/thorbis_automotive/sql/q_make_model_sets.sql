-- VINs and years of some makes and models ($1 tenant; $2 makes and $3 models, text[]
-- of equal length, pair by pair): the whole sets of the pairs a warm batch leased. Each
-- pair is an index lookup on vehicles_make_model.
SELECT v.make, v.model, v.vin, v.model_year
  FROM unnest($2::text[], $3::text[]) AS wanted(make, model)
  JOIN auto.vehicles v
    ON v.tenant_id = $1 AND v.make = wanted.make AND v.model = wanted.model
 ORDER BY v.make, v.model, v.vin
