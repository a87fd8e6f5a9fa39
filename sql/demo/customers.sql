-- customers: the table behind the `thorbis-cache demo` workload.
--
-- One row per (tenant, customer). The tenant id leads the primary key, so a tenant's
-- rows are adjacent in the index and every lookup of the demo's loader
-- (customer_get.sql: tenant_id = $1 AND id = $2) is a single primary-key probe.
-- Columns mirror the seed's home-services customer record; name, email and phone are
-- the personal data the demo's encrypted cache entries must not reveal.
--
-- Runs as one simple-protocol batch (no parameters). It drops a previous copy first:
-- the demo always runs on an ephemeral database it created itself.
DROP TABLE IF EXISTS customers;

CREATE TABLE customers (
    tenant_id          text          NOT NULL,
    id                 bigint        NOT NULL,
    name               text          NOT NULL,
    email              text          NOT NULL,
    phone              text          NOT NULL,
    street             text          NOT NULL,
    city               text          NOT NULL,
    postal_code        text          NOT NULL,
    customer_type      text          NOT NULL
        CHECK (customer_type IN ('residential', 'commercial')),
    account_status     text          NOT NULL
        CHECK (account_status IN ('active', 'inactive', 'suspended')),
    payment_status     text          NOT NULL
        CHECK (payment_status IN ('current', 'overdue', 'collections')),
    lifetime_value     numeric(12, 2) NOT NULL DEFAULT 0,
    service_count      integer       NOT NULL DEFAULT 0,
    last_service_date  date,
    created_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
