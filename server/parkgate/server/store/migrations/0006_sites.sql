-- Sites on their own (docs/sites-cluster.md): site edges as devices, the
-- signing keys and serial ranges the cluster gives each site, the feed's
-- change marks, the forward cursors and the conflicts a partition can cause.

ALTER TABLE devices DROP CONSTRAINT devices_kind_check;
ALTER TABLE devices ADD CONSTRAINT devices_kind_check
    CHECK (kind IN ('gate', 'handheld', 'sales_window', 'kiosk', 'site_edge'));

-- A site's key: its private half never leaves the edge (no seed here). The
-- cluster's own signing key is the one active key of no site.
ALTER TABLE signing_keys ALTER COLUMN seed DROP NOT NULL;
ALTER TABLE signing_keys ADD COLUMN site text NOT NULL DEFAULT '';
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_seed_or_site CHECK (seed IS NOT NULL OR site <> '');
DROP INDEX signing_keys_one_active;
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE state = 'active' AND site = '';
CREATE UNIQUE INDEX signing_keys_site_public ON signing_keys (public_key) WHERE site <> '';

-- Serials of central sales stay below 2^40; each site gets a block above it,
-- so an offline sale and a central one can never take the same serial.
ALTER SEQUENCE ticket_serials MAXVALUE 1099511627775;
CREATE TABLE site_serial_blocks (
    serial_first bigint PRIMARY KEY,
    key_id       integer NOT NULL REFERENCES signing_keys,
    site         text NOT NULL,
    device_id    text NOT NULL REFERENCES devices,
    serial_last  bigint NOT NULL CHECK (serial_last >= serial_first AND serial_last < 281474976710656),
    provisioned_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX site_serial_blocks_key ON site_serial_blocks (key_id);
CREATE TABLE site_serial_next (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    next bigint NOT NULL
);
INSERT INTO site_serial_next (next) VALUES (1099511627776);

-- The feed's change mark: the id of the transaction that last wrote a row
-- (not a sequence number: those are taken in write order, not commit order,
-- and a reader could step over a row whose transaction commits late).
CREATE FUNCTION feed_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.feed_xid := pg_current_xact_id();
    RETURN NEW;
END $$;

ALTER TABLE tickets ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE card_bindings ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE signing_keys ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE products ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE prices ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE holidays ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE users ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE devices ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE parks ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE attractions ADD COLUMN feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE TRIGGER tickets_feed BEFORE UPDATE ON tickets FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER card_bindings_feed BEFORE UPDATE ON card_bindings FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER signing_keys_feed BEFORE UPDATE ON signing_keys FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER products_feed BEFORE UPDATE ON products FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER prices_feed BEFORE UPDATE ON prices FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER holidays_feed BEFORE UPDATE ON holidays FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER parks_feed BEFORE UPDATE ON parks FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER attractions_feed BEFORE UPDATE ON attractions FOR EACH ROW EXECUTE FUNCTION feed_mark();
CREATE TRIGGER devices_feed BEFORE UPDATE ON devices FOR EACH ROW
    WHEN (OLD.secret_hash IS DISTINCT FROM NEW.secret_hash OR OLD.disabled IS DISTINCT FROM NEW.disabled
          OR OLD.site IS DISTINCT FROM NEW.site OR OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION feed_mark();
-- A log-in writes last_login_at: that is nothing an edge needs.
CREATE TRIGGER users_feed BEFORE UPDATE ON users FOR EACH ROW
    WHEN (OLD.password_hash IS DISTINCT FROM NEW.password_hash OR OLD.disabled IS DISTINCT FROM NEW.disabled
          OR OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION feed_mark();

-- An operator's permissions come from roles: a change there marks the operators holding them.
CREATE FUNCTION feed_mark_users_of_role() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users u SET feed_xid = pg_current_xact_id()
     WHERE u.id IN (SELECT ur.user_id FROM user_roles ur
                     WHERE ur.role = coalesce(NEW.role, OLD.role));
    RETURN NULL;
END $$;
CREATE FUNCTION feed_mark_user_of_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users u SET feed_xid = pg_current_xact_id() WHERE u.id = coalesce(NEW.user_id, OLD.user_id);
    RETURN NULL;
END $$;
CREATE TRIGGER role_permissions_feed AFTER INSERT OR UPDATE OR DELETE ON role_permissions
    FOR EACH ROW EXECUTE FUNCTION feed_mark_users_of_role();
CREATE TRIGGER user_roles_feed AFTER INSERT OR UPDATE OR DELETE ON user_roles
    FOR EACH ROW EXECUTE FUNCTION feed_mark_user_of_grant();

-- Rows that go away (a card released, a holiday removed) leave a mark the feed sends on.
CREATE TABLE feed_removals (
    feed_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind     text NOT NULL CHECK (kind IN ('card', 'holiday')),
    key      text NOT NULL,
    park_id  text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_removals_xid ON feed_removals (feed_xid);
CREATE FUNCTION feed_card_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO feed_removals (kind, key) VALUES ('card', OLD.card_uid);
    RETURN NULL;
END $$;
CREATE FUNCTION feed_holiday_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO feed_removals (kind, key, park_id) VALUES ('holiday', OLD.day::text, OLD.park_id);
    RETURN NULL;
END $$;
CREATE TRIGGER card_bindings_removed AFTER DELETE ON card_bindings FOR EACH ROW EXECUTE FUNCTION feed_card_removed();
CREATE TRIGGER holidays_removed AFTER DELETE ON holidays FOR EACH ROW EXECUTE FUNCTION feed_holiday_removed();

CREATE INDEX tickets_feed_xid ON tickets (feed_xid);
CREATE INDEX card_bindings_feed_xid ON card_bindings (feed_xid);

-- Store and forward: the last record taken from each device, so a replay is
-- recognised and records of one device are taken in order.
-- Sequences count within one journal (an edge store's life): a replaced edge
-- box starts a new journal at 1, which is new work, not a replay.
CREATE TABLE forward_cursors (
    device_id  text NOT NULL,
    journal_id text NOT NULL,
    edge_id    text NOT NULL REFERENCES devices,
    sequence   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, journal_id)
);

-- Decisions an edge made alone are recorded as validations, marked offline.
ALTER TABLE validations ADD COLUMN offline_edge text;
ALTER TABLE validations ADD COLUMN site text NOT NULL DEFAULT '';

-- A single-use ticket admitted twice during a partition: both admissions
-- stand (nobody is pulled out of a park), this row says so.
CREATE TABLE site_conflicts (
    id               bigserial PRIMARY KEY,
    ticket_id        uuid NOT NULL REFERENCES tickets,
    park_id          text NOT NULL,
    first_site       text NOT NULL,
    first_device_id  text NOT NULL,
    first_at         timestamptz NOT NULL,
    second_site      text NOT NULL,
    second_device_id text NOT NULL,
    second_at        timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX site_conflicts_recorded ON site_conflicts (recorded_at);

-- Offline sales: the order remembers the edge that forwarded it.
ALTER TABLE orders ADD COLUMN site text NOT NULL DEFAULT '';

-- A forwarded record the cluster cannot take (a code not signed by the
-- site's key, a serial outside its blocks, ...) is kept here, whole, for an
-- operator, and the device's cursor moves on: one bad record never blocks
-- the records after it.
CREATE TABLE forward_rejections (
    device_id text NOT NULL,
    journal_id text NOT NULL,
    sequence  bigint NOT NULL,
    edge_id   text NOT NULL,
    reason    text NOT NULL,
    message   text NOT NULL,
    record    bytea NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, journal_id, sequence)
);
