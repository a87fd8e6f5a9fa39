-- thorbis-home-services: the home-services tables, schema hs.
--
-- Idempotent (IF NOT EXISTS everywhere): applied at every `db init` / `migrate` and twice
-- by the contract kit. Multi-tenant by construction: every table carries
-- `tenant_id text NOT NULL`, every primary key starts with it, and every foreign key
-- includes it, so a row can never reference another tenant's row. Ids are bigints
-- assigned by the host application (per tenant). Indexes lead with tenant_id because
-- every query of the cache is scoped to one tenant.
--
-- Times are timestamptz (UTC on the wire); money is numeric(12,2).

CREATE SCHEMA IF NOT EXISTS hs;

CREATE TABLE IF NOT EXISTS hs.service_areas (
    tenant_id         text NOT NULL,
    id                bigint NOT NULL,
    name              text NOT NULL,
    zip_codes         text[] NOT NULL DEFAULT '{}',
    center_longitude  double precision NOT NULL
        CHECK (center_longitude BETWEEN -180 AND 180),
    -- Redis geo indexes accept latitudes within +-85.05112878 only.
    center_latitude   double precision NOT NULL
        CHECK (center_latitude BETWEEN -85.05112878 AND 85.05112878),
    radius_km         double precision NOT NULL DEFAULT 25 CHECK (radius_km > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- The seed's user_mgmt.users, reduced to what the vertical needs: field staff.
CREATE TABLE IF NOT EXISTS hs.technicians (
    tenant_id             text NOT NULL,
    id                    bigint NOT NULL,
    first_name            text NOT NULL,
    last_name             text NOT NULL,
    email                 text NOT NULL,
    role                  text NOT NULL CHECK (role IN
        ('technician', 'senior_technician', 'field_supervisor', 'dispatcher')),
    active                boolean NOT NULL DEFAULT true,
    home_service_area_id  bigint,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, home_service_area_id) REFERENCES hs.service_areas (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS technicians_role_idx ON hs.technicians (tenant_id, role);

CREATE TABLE IF NOT EXISTS hs.customers (
    tenant_id        text NOT NULL,
    id               bigint NOT NULL,
    first_name       text NOT NULL,
    last_name        text NOT NULL,
    email            text NOT NULL,
    phone            text NOT NULL,
    customer_type    text NOT NULL CHECK (customer_type IN
        ('residential', 'commercial', 'industrial')),
    account_status   text NOT NULL CHECK (account_status IN
        ('active', 'inactive', 'vip', 'suspended')),
    payment_status   text NOT NULL CHECK (payment_status IN
        ('current', 'overdue_30', 'overdue_60', 'collections')),
    service_area_id  bigint,
    street           text NOT NULL DEFAULT '',
    city             text NOT NULL DEFAULT '',
    postal_code      text NOT NULL DEFAULT '',
    longitude        double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    latitude         double precision NOT NULL
        CHECK (latitude BETWEEN -85.05112878 AND 85.05112878),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, service_area_id) REFERENCES hs.service_areas (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS customers_status_idx ON hs.customers (tenant_id, account_status);
CREATE INDEX IF NOT EXISTS customers_area_idx ON hs.customers (tenant_id, service_area_id);
CREATE INDEX IF NOT EXISTS customers_updated_idx ON hs.customers (tenant_id, updated_at);

CREATE TABLE IF NOT EXISTS hs.work_orders (
    tenant_id               text NOT NULL,
    id                      bigint NOT NULL,
    customer_id             bigint NOT NULL,
    assigned_technician_id  bigint,
    service_area_id         bigint,
    status                  text NOT NULL CHECK (status IN ('pending', 'scheduled',
        'dispatched', 'in_progress', 'on_hold', 'completed', 'cancelled')),
    priority                text NOT NULL CHECK (priority IN
        ('emergency', 'urgent', 'high', 'standard', 'low')),
    service_type            text NOT NULL,
    description             text NOT NULL DEFAULT '',
    scheduled_at            timestamptz NOT NULL,
    -- The UTC day of scheduled_at, stored so that invalidation rules can name the
    -- technician-schedule key of a row (its `day` parameter) from a plain column.
    scheduled_day           date GENERATED ALWAYS AS
        ((scheduled_at AT TIME ZONE 'UTC')::date) STORED,
    estimated_minutes       integer NOT NULL DEFAULT 60 CHECK (estimated_minutes > 0),
    started_at              timestamptz,
    completed_at            timestamptz,
    travel_time_minutes     integer CHECK (travel_time_minutes >= 0),
    longitude               double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    latitude                double precision NOT NULL
        CHECK (latitude BETWEEN -85.05112878 AND 85.05112878),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES hs.customers (tenant_id, id),
    FOREIGN KEY (tenant_id, assigned_technician_id) REFERENCES hs.technicians (tenant_id, id),
    FOREIGN KEY (tenant_id, service_area_id) REFERENCES hs.service_areas (tenant_id, id),
    CHECK (completed_at IS NULL OR started_at IS NULL OR completed_at >= started_at),
    CHECK (status <> 'completed' OR completed_at IS NOT NULL)
);
-- Service history of a customer (completion order) and the summary view's join.
CREATE INDEX IF NOT EXISTS work_orders_customer_idx
    ON hs.work_orders (tenant_id, customer_id, completed_at);
-- A technician's day, and the performance view's join.
CREATE INDEX IF NOT EXISTS work_orders_technician_idx
    ON hs.work_orders (tenant_id, assigned_technician_id, scheduled_day);
-- Status lists.
CREATE INDEX IF NOT EXISTS work_orders_status_idx
    ON hs.work_orders (tenant_id, status, scheduled_at);
-- The service-area view's join and the 90-day windows.
CREATE INDEX IF NOT EXISTS work_orders_area_idx
    ON hs.work_orders (tenant_id, service_area_id, created_at);
CREATE INDEX IF NOT EXISTS work_orders_day_idx ON hs.work_orders (tenant_id, scheduled_day);

CREATE TABLE IF NOT EXISTS hs.invoices (
    tenant_id        text NOT NULL,
    id               bigint NOT NULL,
    work_order_id    bigint NOT NULL,
    customer_id      bigint NOT NULL,
    status           text NOT NULL CHECK (status IN ('draft', 'sent', 'paid', 'overdue', 'void')),
    subtotal_amount  numeric(12, 2) NOT NULL CHECK (subtotal_amount >= 0),
    tax_amount       numeric(12, 2) NOT NULL DEFAULT 0 CHECK (tax_amount >= 0),
    total_amount     numeric(12, 2) NOT NULL CHECK (total_amount >= 0),
    due_date         date,
    paid_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, work_order_id) REFERENCES hs.work_orders (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES hs.customers (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS invoices_work_order_idx ON hs.invoices (tenant_id, work_order_id);
CREATE INDEX IF NOT EXISTS invoices_customer_idx ON hs.invoices (tenant_id, customer_id);
CREATE INDEX IF NOT EXISTS invoices_created_idx ON hs.invoices (tenant_id, created_at);

CREATE TABLE IF NOT EXISTS hs.quality_control_inspections (
    tenant_id       text NOT NULL,
    id              bigint NOT NULL,
    work_order_id   bigint NOT NULL,
    inspector_id    bigint,
    overall_rating  numeric(2, 1) NOT NULL CHECK (overall_rating BETWEEN 0 AND 5),
    notes           text NOT NULL DEFAULT '',
    inspected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, work_order_id) REFERENCES hs.work_orders (tenant_id, id),
    FOREIGN KEY (tenant_id, inspector_id) REFERENCES hs.technicians (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS inspections_work_order_idx
    ON hs.quality_control_inspections (tenant_id, work_order_id);
