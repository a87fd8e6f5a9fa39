-- thorbis-restaurant: the restaurant tables, schema rest.
--
-- Idempotent (IF NOT EXISTS, CREATE OR REPLACE): applied at every `db init` and twice by
-- the contract kit. Every table carries `tenant_id text NOT NULL`, first in its primary
-- key and its indexes; foreign keys include tenant_id, so no row references another
-- tenant's row. Ids are bigints assigned by the host (per tenant). Money is numeric(10,2),
-- times timestamptz, days and slots are location-local `date` / `time` values.
--
-- Two copies are kept by triggers, in the transaction of the change, so that the
-- invalidation rules can name exact keys from the changed rows (a rule only sees the
-- columns of the row that changed):
--
-- * menu_entries.item_price is the item's base_price: a price change of an item updates
--   exactly the entries of the menus that list it, and the outbox records one change per
--   such menu -- "invalidate exactly the menus containing the item", with no scan;
-- * order_items.location_id / order_priority / order_status copy their order's: a
--   priority or status change of an order is a change of its lines, which name the
--   station queues (location, station) that are stale.

CREATE SCHEMA IF NOT EXISTS rest;

CREATE TABLE IF NOT EXISTS rest.locations (
    tenant_id   text NOT NULL,
    id          bigint NOT NULL,
    name        text NOT NULL,
    city        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS rest.menu_items (
    tenant_id        text NOT NULL,
    id               bigint NOT NULL,
    name             text NOT NULL,
    category         text NOT NULL,
    base_price       numeric(10,2) NOT NULL CHECK (base_price >= 0),
    cost             numeric(10,2) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    kitchen_station  text NOT NULL DEFAULT 'general' CHECK (kitchen_station IN
        ('grill', 'fry', 'saute', 'cold', 'pastry', 'bar', 'general')),
    prep_minutes     integer NOT NULL DEFAULT 10 CHECK (prep_minutes >= 0),
    available        boolean NOT NULL DEFAULT true,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS menu_items_category_idx ON rest.menu_items (tenant_id, category);

CREATE TABLE IF NOT EXISTS rest.menus (
    tenant_id    text NOT NULL,
    id           bigint NOT NULL,
    location_id  bigint NOT NULL,
    name         text NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES rest.locations (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS menus_location_idx ON rest.menus (tenant_id, location_id);

CREATE TABLE IF NOT EXISTS rest.menu_entries (
    tenant_id   text NOT NULL,
    menu_id     bigint NOT NULL,
    item_id     bigint NOT NULL,
    position    integer NOT NULL DEFAULT 0,
    -- Kept equal to menu_items.base_price by the triggers below.
    item_price  numeric(10,2) NOT NULL,
    PRIMARY KEY (tenant_id, menu_id, item_id),
    FOREIGN KEY (tenant_id, menu_id) REFERENCES rest.menus (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, item_id) REFERENCES rest.menu_items (tenant_id, id)
);
-- The fan-out of a price change finds the entries of an item by this index.
CREATE INDEX IF NOT EXISTS menu_entries_item_idx ON rest.menu_entries (tenant_id, item_id);

-- An entry's item_price is its item's base_price, whatever the writer passed.
CREATE OR REPLACE FUNCTION rest.menu_entry_copy_price() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT i.base_price INTO NEW.item_price
      FROM rest.menu_items i
     WHERE i.tenant_id = NEW.tenant_id AND i.id = NEW.item_id;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER menu_entry_copy_price
    BEFORE INSERT OR UPDATE ON rest.menu_entries
    FOR EACH ROW EXECUTE FUNCTION rest.menu_entry_copy_price();

-- A price change of an item is a change of every entry listing it (and of no other).
CREATE OR REPLACE FUNCTION rest.menu_item_push_price() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rest.menu_entries e
       SET item_price = NEW.base_price
     WHERE e.tenant_id = NEW.tenant_id AND e.item_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER menu_item_push_price
    AFTER UPDATE OF base_price ON rest.menu_items
    FOR EACH ROW WHEN (OLD.base_price IS DISTINCT FROM NEW.base_price)
    EXECUTE FUNCTION rest.menu_item_push_price();

CREATE TABLE IF NOT EXISTS rest.dining_tables (
    tenant_id    text NOT NULL,
    id           bigint NOT NULL,
    location_id  bigint NOT NULL,
    label        text NOT NULL,
    seats        integer NOT NULL CHECK (seats > 0),
    active       boolean NOT NULL DEFAULT true,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES rest.locations (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS dining_tables_location_idx
    ON rest.dining_tables (tenant_id, location_id);

CREATE TABLE IF NOT EXISTS rest.reservations (
    tenant_id    text NOT NULL,
    id           bigint NOT NULL,
    location_id  bigint NOT NULL,
    table_id     bigint NOT NULL,
    day          date NOT NULL,
    slot         time NOT NULL,
    party_size   integer NOT NULL CHECK (party_size > 0),
    status       text NOT NULL CHECK (status IN
        ('booked', 'seated', 'completed', 'cancelled', 'no_show')),
    seated_at    timestamptz,
    left_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES rest.locations (tenant_id, id),
    FOREIGN KEY (tenant_id, table_id) REFERENCES rest.dining_tables (tenant_id, id),
    CHECK (left_at IS NULL OR seated_at IS NOT NULL AND left_at >= seated_at)
);
CREATE INDEX IF NOT EXISTS reservations_day_idx
    ON rest.reservations (tenant_id, location_id, day);

CREATE TABLE IF NOT EXISTS rest.orders (
    tenant_id     text NOT NULL,
    id            bigint NOT NULL,
    location_id   bigint NOT NULL,
    table_label   text NOT NULL DEFAULT '',
    priority      text NOT NULL DEFAULT 'normal' CHECK (priority IN ('rush', 'vip', 'normal')),
    status        text NOT NULL CHECK (status IN ('open', 'ready', 'served', 'cancelled')),
    placed_at     timestamptz NOT NULL,
    completed_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES rest.locations (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS orders_open_idx ON rest.orders (tenant_id, location_id, status);
CREATE INDEX IF NOT EXISTS orders_placed_idx ON rest.orders (tenant_id, placed_at);

CREATE TABLE IF NOT EXISTS rest.order_items (
    tenant_id       text NOT NULL,
    order_id        bigint NOT NULL,
    line            integer NOT NULL,
    item_id         bigint NOT NULL,
    quantity        integer NOT NULL CHECK (quantity > 0),
    unit_price      numeric(10,2) NOT NULL CHECK (unit_price >= 0),
    station         text NOT NULL CHECK (station IN
        ('grill', 'fry', 'saute', 'cold', 'pastry', 'bar', 'general')),
    done            boolean NOT NULL DEFAULT false,
    -- Copies of the order's columns, kept by the triggers below.
    location_id     bigint NOT NULL,
    order_priority  text NOT NULL,
    order_status    text NOT NULL,
    PRIMARY KEY (tenant_id, order_id, line),
    FOREIGN KEY (tenant_id, order_id) REFERENCES rest.orders (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, item_id) REFERENCES rest.menu_items (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS order_items_item_idx ON rest.order_items (tenant_id, item_id);

CREATE OR REPLACE FUNCTION rest.order_item_copy_order() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT o.location_id, o.priority, o.status
      INTO NEW.location_id, NEW.order_priority, NEW.order_status
      FROM rest.orders o
     WHERE o.tenant_id = NEW.tenant_id AND o.id = NEW.order_id;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER order_item_copy_order
    BEFORE INSERT OR UPDATE ON rest.order_items
    FOR EACH ROW EXECUTE FUNCTION rest.order_item_copy_order();

CREATE OR REPLACE FUNCTION rest.order_push_to_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The BEFORE trigger of order_items re-reads the order: touching the lines is enough.
    UPDATE rest.order_items i
       SET order_status = NEW.status
     WHERE i.tenant_id = NEW.tenant_id AND i.order_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER order_push_to_items
    AFTER UPDATE OF location_id, priority, status ON rest.orders
    FOR EACH ROW WHEN (OLD.location_id IS DISTINCT FROM NEW.location_id
                       OR OLD.priority IS DISTINCT FROM NEW.priority
                       OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION rest.order_push_to_items();
