-- The rest of the catalogue: member cards (S15), stored value (S8), count
-- cards per attraction (S10), groups (S16), vouchers (S12, S17) and
-- back-entry (S19). Only additions to the tables of 0001-0004, except the
-- list of order kinds, which grows.

-- Orders that are not plain ticket sales still are orders: their payments
-- count in the shift totals and the reports like every sale's.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_kind_check;
ALTER TABLE orders ADD CONSTRAINT orders_kind_check CHECK (kind IN (
    'sale', 'quick_sale', 'member', 'top_up', 'card_reissue', 'member_renewal', 'group_deposit', 'group_pickup',
    'back_entry'));
ALTER TABLE orders ADD COLUMN back_entered boolean NOT NULL DEFAULT false;

-- What the decision engine reads of a ticket besides 0002/0003.
ALTER TABLE tickets
    -- NULL: not stored value. Never below 0 online (the engine refuses); below 0 only when a site edge's
    -- forwarded offline charge exceeded what was left: the debt shows (docs/sites.md, stored value offline).
    ADD COLUMN balance           bigint,
    ADD COLUMN blocked_at        timestamptz,                                     -- a card reported lost
    ADD COLUMN attraction_limits jsonb NOT NULL DEFAULT '{}',                     -- S10: entries per attraction
    ADD COLUMN attraction_used   jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN back_entered      boolean NOT NULL DEFAULT false;

-- What a decision charged and the balance it left: a retried request gets
-- the same answer, and the card's history lists gate charges.
ALTER TABLE validations
    ADD COLUMN charged      bigint NOT NULL DEFAULT 0 CHECK (charged >= 0),
    ADD COLUMN balance      bigint,
    ADD COLUMN back_entered boolean NOT NULL DEFAULT false;
CREATE INDEX validations_charged ON validations (ticket_id, at) WHERE charged > 0;

-- S8: a price per attraction and day type; attractions.stored_value_price is
-- the fallback for a day type without its own row.
CREATE TABLE attraction_fares (
    attraction_id text NOT NULL REFERENCES attractions ON DELETE CASCADE,
    day_type      text NOT NULL CHECK (day_type IN ('weekday', 'weekend', 'holiday', 'peak')),
    amount        bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (attraction_id, day_type)
);
-- A fare changed is its attraction changed, for the site feed (its park is sent again with the fares).
CREATE FUNCTION attraction_fares_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attractions SET feed_xid = pg_current_xact_id()
     WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.attraction_id ELSE NEW.attraction_id END;
    RETURN NULL;
END $$;
CREATE TRIGGER attraction_fares_feed AFTER INSERT OR UPDATE OR DELETE ON attraction_fares
    FOR EACH ROW EXECUTE FUNCTION attraction_fares_feed();

-- Money moved on a card at a window (top-ups, refunds of the balance,
-- replacement fees) and what happened to the card (lost, reissued,
-- renewed). Gate charges are the validations rows with charged > 0.
CREATE TABLE card_events (
    id            bigserial PRIMARY KEY,
    request_id    text UNIQUE CHECK (length(request_id) BETWEEN 1 AND 128),
    ticket_id     uuid NOT NULL REFERENCES tickets,
    card_uid      text NOT NULL DEFAULT '',
    kind          text NOT NULL CHECK (kind IN ('issued', 'top_up', 'refund', 'lost', 'reissued', 'renewed')),
    amount        bigint NOT NULL DEFAULT 0,
    balance_after bigint,
    order_id      uuid REFERENCES orders,
    device_id     text NOT NULL DEFAULT '',
    operator      text NOT NULL DEFAULT '',
    operator_id   uuid REFERENCES users,      -- who paid out a refund: it counts in that shift's takings
    note          text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX card_events_ticket ON card_events (ticket_id, at);
CREATE INDEX card_events_refunds ON card_events (operator_id, at) WHERE kind = 'refund';

-- A card reported lost and replaced: its UID is refused (CARD_BLOCKED), not
-- unknown, and never takes over the member's new card.
CREATE TABLE lost_cards (
    card_uid  text PRIMARY KEY,
    ticket_id uuid NOT NULL REFERENCES tickets,
    lost_at   timestamptz NOT NULL DEFAULT now()
);

-- S15: real-name members. The photo is kept as a resized JPEG; only
-- operators with members.personal read it or the ID document.
CREATE TABLE members (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id   uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    id_document text NOT NULL DEFAULT '',
    phone       text NOT NULL DEFAULT '',
    photo       bytea,
    product_id  text NOT NULL REFERENCES products,
    ticket_id   uuid NOT NULL UNIQUE REFERENCES tickets,   -- the member's current card
    order_id    uuid NOT NULL REFERENCES orders,           -- the purchase that registered the member
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX members_name ON members (lower(name));
CREATE INDEX members_phone ON members (phone);
CREATE INDEX members_family ON members (family_id);

-- S12, S17: exchange vouchers, worth a value or one ticket of a product.
CREATE TABLE vouchers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code        text NOT NULL UNIQUE,
    series      text NOT NULL,
    request_id  text NOT NULL,
    product_id  text REFERENCES products,
    value       bigint CHECK (value IS NULL OR value > 0),
    currency    char(3) NOT NULL,
    valid_from  date NOT NULL,
    valid_until date NOT NULL,
    issuer      text NOT NULL,
    recipient   text NOT NULL DEFAULT '',
    state       text NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'redeemed', 'cancelled')),
    order_id    uuid REFERENCES orders,
    redeemed_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((product_id IS NULL) <> (value IS NULL)),
    CHECK (valid_until >= valid_from)
);
CREATE INDEX vouchers_series ON vouchers (series);
CREATE INDEX vouchers_request ON vouchers (request_id);

-- S16: group reservations of travel agencies and companies.
CREATE TABLE group_reservations (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    request_id    text NOT NULL UNIQUE CHECK (length(request_id) BETWEEN 1 AND 128),
    company       text NOT NULL CHECK (length(company) BETWEEN 1 AND 200),
    contact       text NOT NULL DEFAULT '',
    park_id       text NOT NULL REFERENCES parks,
    visit_date    date NOT NULL,
    head_count    integer NOT NULL CHECK (head_count >= 1),
    lines         jsonb NOT NULL,            -- [{product_id, quantity, unit_price}]
    deposit       bigint NOT NULL DEFAULT 0 CHECK (deposit >= 0),
    deposit_order uuid REFERENCES orders,
    state         text NOT NULL DEFAULT 'reserved' CHECK (state IN ('reserved', 'picked_up', 'no_show', 'cancelled')),
    order_id      uuid REFERENCES orders,
    arrived       integer NOT NULL DEFAULT 0,
    operator      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX group_reservations_date ON group_reservations (visit_date);

-- S19: what was sold or checked by hand during an outage, entered afterwards.
CREATE TABLE back_entries (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id           uuid NOT NULL UNIQUE REFERENCES orders,
    product_id         text NOT NULL REFERENCES products,
    sold_at            timestamptz NOT NULL,
    quantity           integer NOT NULL CHECK (quantity >= 1),
    method             text NOT NULL,
    customer           text NOT NULL DEFAULT '',
    note               text NOT NULL CHECK (length(note) >= 1),
    entries_by_hand    integer NOT NULL DEFAULT 0 CHECK (entries_by_hand >= 0),
    entries_recorded   integer NOT NULL DEFAULT 0,   -- of those, new (not already forwarded by the gate)
    device_id          text NOT NULL DEFAULT '',
    operator           text NOT NULL,
    entered_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX back_entries_sold ON back_entries (sold_at);
