-- Selling (S6, S7, S11, S13, S18, S20, S21): the numbers a signed code
-- carries, prices per day type, the holiday calendar, signing keys, orders,
-- tickets, card bindings and refunds.

-- A code carries small numbers, not slugs (docs/ticket-code.md): a park
-- number (u16), a product number (u32) and attraction slots 1..64 per park.
CREATE SEQUENCE park_numbers MAXVALUE 65535;
ALTER TABLE parks ADD COLUMN number integer NOT NULL UNIQUE DEFAULT nextval('park_numbers');
ALTER SEQUENCE park_numbers OWNED BY parks.number;

CREATE SEQUENCE product_numbers MAXVALUE 4294967295;
ALTER TABLE products ADD COLUMN number bigint NOT NULL UNIQUE DEFAULT nextval('product_numbers');
ALTER SEQUENCE product_numbers OWNED BY products.number;

ALTER TABLE attractions ADD COLUMN slot smallint CHECK (slot BETWEEN 1 AND 64);
UPDATE attractions a SET slot = n.slot
  FROM (SELECT id, row_number() OVER (PARTITION BY park_id ORDER BY id) AS slot FROM attractions) n
 WHERE n.id = a.id;
ALTER TABLE attractions ALTER COLUMN slot SET NOT NULL;
ALTER TABLE attractions ADD CONSTRAINT attractions_slot_per_park UNIQUE (park_id, slot);

-- The calendar that decides a date's day type (S7). Weekday and weekend
-- follow from the date itself; only holidays and peak periods are rows.
CREATE TABLE holidays (
    park_id  text NOT NULL REFERENCES parks,
    day      date NOT NULL,
    day_type text NOT NULL CHECK (day_type IN ('holiday', 'peak')),
    name     text NOT NULL DEFAULT '',
    PRIMARY KEY (park_id, day)
);

CREATE TABLE prices (
    product_id  text NOT NULL REFERENCES products,
    day_type    text NOT NULL CHECK (day_type IN ('weekday', 'weekend', 'holiday', 'peak')),
    peak_name   text NOT NULL DEFAULT '',
    amount      bigint NOT NULL CHECK (amount >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT '',
    PRIMARY KEY (product_id, day_type, peak_name),
    CHECK (peak_name = '' OR day_type = 'peak')
);

-- Ed25519 keys that sign ticket codes. Servers are stateless, so the key they
-- all sign with lives here; gates only ever get the public half.
CREATE TABLE signing_keys (
    key_id     integer PRIMARY KEY CHECK (key_id BETWEEN 1 AND 65535),
    seed       bytea NOT NULL CHECK (length(seed) = 32),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    state      text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'revoked')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE state = 'active';

-- One order = one transaction: all its tickets or none. request_id makes a
-- retried sale return the first outcome; request_hash tells a retry from a
-- different request that reused the id.
CREATE TABLE orders (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    request_id       text NOT NULL UNIQUE CHECK (length(request_id) BETWEEN 1 AND 128),
    request_hash     bytea NOT NULL,
    kind             text NOT NULL DEFAULT 'sale' CHECK (kind IN ('sale', 'quick_sale')),
    currency         char(3) NOT NULL,
    total            bigint NOT NULL CHECK (total >= 0),
    window_device_id text NOT NULL REFERENCES devices,
    operator_id      uuid NOT NULL REFERENCES users,
    operator         text NOT NULL,
    customer         text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_created ON orders (created_at);
CREATE INDEX orders_operator ON orders (operator_id, created_at);

CREATE TABLE payments (
    order_id  uuid NOT NULL REFERENCES orders,
    position  smallint NOT NULL,
    method    text NOT NULL CHECK (method IN ('cash', 'bank_card', 'mobile', 'voucher', 'on_account',
                                              'complimentary_payment')),
    amount    bigint NOT NULL CHECK (amount >= 0),
    reference text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, position)
);

-- Serials are printed on tickets and carried in codes (< 2^48).
CREATE SEQUENCE ticket_serials MAXVALUE 281474976710655;

-- A ticket copies what the gate decision needs (validity, counts, re-entry)
-- from the product version it was sold under, so the database can decide an
-- admission from this row alone, and a later product change alters nothing.
CREATE TABLE tickets (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    serial           bigint NOT NULL UNIQUE,
    order_id         uuid NOT NULL REFERENCES orders,
    product_id       text NOT NULL,
    product_version  integer NOT NULL,
    park_id          text NOT NULL REFERENCES parks,
    key_id           integer NOT NULL REFERENCES signing_keys,
    code             text NOT NULL,
    card_uid         text,
    price            bigint NOT NULL CHECK (price >= 0),
    deposit          bigint NOT NULL DEFAULT 0 CHECK (deposit >= 0),
    visit_date       date NOT NULL,
    valid_from       timestamptz NOT NULL,
    valid_until      timestamptz NOT NULL,
    valid_days       integer NOT NULL DEFAULT 0,    -- DAYS_FROM_FIRST_USE: from first_used_at
    persons          integer NOT NULL DEFAULT 1 CHECK (persons >= 1),
    entries_total    integer NOT NULL DEFAULT 0,    -- 0 = unlimited
    entries_per_day  integer NOT NULL DEFAULT 0,    -- 0 = unlimited
    reentry_allowed  boolean NOT NULL DEFAULT false,
    hold_for_check   boolean NOT NULL DEFAULT false,
    attraction_ids   text[] NOT NULL DEFAULT '{}',  -- S14: attractions admitted besides the park gate
    window_start     smallint,                      -- S9: minutes since local midnight; NULL = no window
    window_end       smallint,
    entries_used     integer NOT NULL DEFAULT 0,
    first_used_at    timestamptz,
    state            text NOT NULL DEFAULT 'valid' CHECK (state IN ('valid', 'refunded', 'voided')),
    state_changed_at timestamptz,
    FOREIGN KEY (product_id, product_version) REFERENCES product_versions (product_id, version),
    CHECK (valid_until > valid_from)
);
CREATE INDEX tickets_order ON tickets (order_id);
CREATE INDEX tickets_card ON tickets (card_uid) WHERE card_uid IS NOT NULL;

-- An IC card is bound to at most one live ticket (S21). The primary key makes
-- two windows binding the same card at once collide in the database: exactly
-- one sale wins. A binding whose ticket ended (refunded, voided, expired) may
-- be taken over by a new sale.
CREATE TABLE card_bindings (
    card_uid  text PRIMARY KEY CHECK (card_uid ~ '^[0-9A-F]{8,20}$'),
    ticket_id uuid NOT NULL UNIQUE REFERENCES tickets,
    bound_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refund_reasons (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    label          text NOT NULL,
    refund_percent integer NOT NULL CHECK (refund_percent BETWEEN 0 AND 100),
    disabled       boolean NOT NULL DEFAULT false
);

CREATE TABLE refunds (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    request_id       text NOT NULL UNIQUE CHECK (length(request_id) BETWEEN 1 AND 128),
    request_hash     bytea NOT NULL,
    order_id         uuid NOT NULL REFERENCES orders,
    reason_id        text NOT NULL REFERENCES refund_reasons,
    amount           bigint NOT NULL CHECK (amount >= 0),
    deposit_refunded bigint NOT NULL DEFAULT 0 CHECK (deposit_refunded >= 0),
    note             text NOT NULL DEFAULT '',
    operator_id      uuid NOT NULL REFERENCES users,
    operator         text NOT NULL,
    window_device_id text REFERENCES devices,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_at ON refunds (at);

-- The primary key is the rule "a ticket is refunded once".
CREATE TABLE refund_tickets (
    ticket_id uuid PRIMARY KEY REFERENCES tickets,
    refund_id uuid NOT NULL REFERENCES refunds,
    amount    bigint NOT NULL CHECK (amount >= 0),
    deposit   bigint NOT NULL DEFAULT 0 CHECK (deposit >= 0)
);
CREATE INDEX refund_tickets_refund ON refund_tickets (refund_id);
