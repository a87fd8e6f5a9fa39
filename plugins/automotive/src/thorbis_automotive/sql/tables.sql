-- thorbis-automotive: the automotive tables, schema auto.
--
-- Idempotent (IF NOT EXISTS / OR REPLACE everywhere): applied at every `db init` /
-- `migrate` and twice by the contract kit. Multi-tenant by construction: every table
-- carries `tenant_id text NOT NULL`, every primary key starts with it, and every
-- foreign key includes it, so a row can never reference another tenant's row. Indexes
-- lead with tenant_id because every query of the cache is scoped to one tenant.
--
-- Times are timestamptz; money is numeric(12,2); distances are miles (US odometers).

CREATE SCHEMA IF NOT EXISTS auto;

-- ISO 3779 / 49 CFR 565 VIN check, the rule of thorbis_automotive.vin (default
-- CheckDigitRule.NORTH_AMERICA): 17 of A-Z 0-9 without I, O, Q; the position-9 check
-- digit (transliteration, weights 8 7 6 5 4 3 2 10 0 9 8 7 6 5 4 3 2, sum mod 11,
-- 10 = 'X') when the first character (WMI region) is 1-5, North America. IMMUTABLE:
-- it is a pure function of its argument, as a CHECK constraint requires.
CREATE OR REPLACE FUNCTION auto.vin_is_valid(vin text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    weights constant int[] := ARRAY[8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    letters constant text := 'ABCDEFGHJKLMNPRSTUVWXYZ';
    letter_values constant int[] :=
        ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9];
    total int := 0;
    c text;
BEGIN
    IF vin !~ '^[A-HJ-NPR-Z0-9]{17}$' THEN
        RETURN false;
    END IF;
    IF substr(vin, 1, 1) NOT IN ('1', '2', '3', '4', '5') THEN
        RETURN true;
    END IF;
    FOR i IN 1..17 LOOP
        c := substr(vin, i, 1);
        IF c BETWEEN '0' AND '9' THEN
            total := total + c::int * weights[i];
        ELSE
            total := total + letter_values[strpos(letters, c)] * weights[i];
        END IF;
    END LOOP;
    RETURN substr(vin, 9, 1) = CASE WHEN total % 11 = 10 THEN 'X' ELSE (total % 11)::text END;
END
$$;

CREATE TABLE IF NOT EXISTS auto.vehicles (
    tenant_id       text NOT NULL,
    vin             text NOT NULL CONSTRAINT vehicles_vin_valid CHECK (auto.vin_is_valid(vin)),
    make            text NOT NULL,
    model           text NOT NULL,
    model_year      integer NOT NULL CHECK (model_year BETWEEN 1981 AND 2100),
    odometer_miles  integer NOT NULL DEFAULT 0 CHECK (odometer_miles >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, vin)
);
CREATE INDEX IF NOT EXISTS vehicles_make_model ON auto.vehicles (tenant_id, make, model);

-- A shop's services: maintenance interval (whichever of miles and days comes first)
-- and book labor time and rate.
CREATE TABLE IF NOT EXISTS auto.service_types (
    tenant_id       text NOT NULL,
    code            text NOT NULL,
    name            text NOT NULL,
    interval_miles  integer NOT NULL CHECK (interval_miles > 0),
    interval_days   integer NOT NULL CHECK (interval_days > 0),
    standard_hours  numeric(6, 2) NOT NULL CHECK (standard_hours >= 0),
    labor_rate      numeric(8, 2) NOT NULL CHECK (labor_rate >= 0),
    PRIMARY KEY (tenant_id, code)
);

CREATE TABLE IF NOT EXISTS auto.bays (
    tenant_id      text NOT NULL,
    id             integer NOT NULL,
    name           text NOT NULL,
    hours_per_day  numeric(4, 1) NOT NULL DEFAULT 8 CHECK (hours_per_day > 0 AND hours_per_day <= 24),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS auto.technicians (
    tenant_id   text NOT NULL,
    id          integer NOT NULL,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS auto.repair_orders (
    tenant_id       text NOT NULL,
    id              bigint NOT NULL,
    vin             text NOT NULL,
    service_type    text NOT NULL,
    status          text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'in_progress', 'completed', 'cancelled')),
    bay_id          integer,
    technician_id   integer,
    odometer_miles  integer NOT NULL CHECK (odometer_miles >= 0),
    opened_at       timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    labor_hours     numeric(6, 2) CHECK (labor_hours >= 0),
    labor_amount    numeric(12, 2) NOT NULL DEFAULT 0,
    parts_amount    numeric(12, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, vin) REFERENCES auto.vehicles (tenant_id, vin) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, service_type) REFERENCES auto.service_types (tenant_id, code),
    FOREIGN KEY (tenant_id, bay_id) REFERENCES auto.bays (tenant_id, id),
    FOREIGN KEY (tenant_id, technician_id) REFERENCES auto.technicians (tenant_id, id),
    -- A completion time exactly when completed: history and views read one of them.
    CONSTRAINT repair_orders_completion CHECK ((status = 'completed') = (completed_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS repair_orders_vin ON auto.repair_orders (tenant_id, vin, completed_at);
CREATE INDEX IF NOT EXISTS repair_orders_completed
    ON auto.repair_orders (tenant_id, completed_at);

CREATE TABLE IF NOT EXISTS auto.parts (
    tenant_id        text NOT NULL,
    part_number      text NOT NULL,
    description      text NOT NULL,
    category         text NOT NULL,
    unit_cost        numeric(10, 2) NOT NULL CHECK (unit_cost >= 0),
    unit_price       numeric(10, 2) NOT NULL CHECK (unit_price >= 0),
    -- Maintained by the stock_movements trigger below: the ledger is the truth.
    on_hand          integer NOT NULL DEFAULT 0,
    lead_time_days   integer NOT NULL DEFAULT 3 CHECK (lead_time_days >= 0),
    -- z of the reorder point: 1.65 ~ 95% of replenishment cycles without a stock-out.
    service_level_z  numeric(4, 2) NOT NULL DEFAULT 1.65 CHECK (service_level_z >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, part_number)
);
CREATE INDEX IF NOT EXISTS parts_on_hand ON auto.parts (tenant_id, on_hand);

-- The stock ledger, append-only: a wrong movement is corrected by an adjustment.
CREATE TABLE IF NOT EXISTS auto.stock_movements (
    tenant_id        text NOT NULL,
    id               bigint NOT NULL,
    part_number      text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity <> 0),
    reason           text NOT NULL CHECK (reason IN ('receipt', 'issue', 'return', 'adjustment')),
    repair_order_id  bigint,
    moved_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, part_number)
        REFERENCES auto.parts (tenant_id, part_number) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, repair_order_id) REFERENCES auto.repair_orders (tenant_id, id),
    CONSTRAINT stock_movements_sign CHECK (CASE reason
        WHEN 'issue' THEN quantity < 0
        WHEN 'adjustment' THEN true
        ELSE quantity > 0 END)
);
CREATE INDEX IF NOT EXISTS stock_movements_part
    ON auto.stock_movements (tenant_id, part_number, moved_at);

-- parts.on_hand follows the ledger in the inserting transaction: one UPDATE per
-- statement (a COPY of thousands of movements is one statement), summed per part from
-- the transition table. The UPDATE is what the capture trigger of auto.parts sees, so a
-- stock movement invalidates the part's hash and the stock sets (rules.py).
CREATE OR REPLACE FUNCTION auto.apply_stock_movements() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auto.parts p
       SET on_hand = p.on_hand + d.delta, updated_at = now()
      FROM (SELECT tenant_id, part_number, sum(quantity)::integer AS delta
              FROM moved GROUP BY tenant_id, part_number) d
     WHERE p.tenant_id = d.tenant_id AND p.part_number = d.part_number;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER stock_movements_apply
    AFTER INSERT ON auto.stock_movements
    REFERENCING NEW TABLE AS moved
    FOR EACH STATEMENT EXECUTE FUNCTION auto.apply_stock_movements();
