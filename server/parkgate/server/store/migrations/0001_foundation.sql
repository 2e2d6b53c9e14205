-- Operators, roles, devices, parameters, the display dictionary, the audit
-- log, and the catalog's parks, attractions and products.

CREATE TABLE permissions (
    name        text PRIMARY KEY,
    description text NOT NULL
);

CREATE TABLE roles (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    builtin     boolean NOT NULL DEFAULT false
);

CREATE TABLE role_permissions (
    role       text NOT NULL REFERENCES roles ON DELETE CASCADE ON UPDATE CASCADE,
    permission text NOT NULL REFERENCES permissions ON DELETE CASCADE,
    PRIMARY KEY (role, permission)
);

CREATE TABLE users (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username             text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    display_name         text NOT NULL DEFAULT '',
    password_hash        text NOT NULL,
    must_change_password boolean NOT NULL DEFAULT false,
    disabled             boolean NOT NULL DEFAULT false,
    failed_logins        integer NOT NULL DEFAULT 0,
    locked_until         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    last_login_at        timestamptz,
    password_changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_roles (
    user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    role    text NOT NULL REFERENCES roles ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE parks (
    id                     text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                   text NOT NULL,
    time_zone              text NOT NULL,
    currency               char(3) NOT NULL,
    capacity               integer NOT NULL DEFAULT 0 CHECK (capacity >= 0),
    capacity_resume_margin integer NOT NULL DEFAULT 0 CHECK (capacity_resume_margin >= 0),
    disabled               boolean NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attractions (
    id                 text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    park_id            text NOT NULL REFERENCES parks,
    name               text NOT NULL,
    stored_value_price bigint NOT NULL DEFAULT 0 CHECK (stored_value_price >= 0),
    disabled           boolean NOT NULL DEFAULT false
);
CREATE INDEX attractions_park ON attractions (park_id);

CREATE TABLE products (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    park_id         text NOT NULL REFERENCES parks,
    current_version integer NOT NULL DEFAULT 1,
    on_sale         boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_park ON products (park_id);

-- A ticket points at the version it was sold under: changing a product's
-- rules never changes tickets already sold.
CREATE TABLE product_versions (
    product_id text NOT NULL REFERENCES products,
    version    integer NOT NULL,
    name       text NOT NULL,
    kind       text NOT NULL,
    rules      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, version)
);

CREATE TABLE devices (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    kind          text NOT NULL CHECK (kind IN ('gate', 'handheld', 'sales_window', 'kiosk')),
    site          text NOT NULL DEFAULT '',
    park_id       text REFERENCES parks,
    attraction_id text REFERENCES attractions,
    direction     text CHECK (direction IN ('in', 'out')),
    description   text NOT NULL DEFAULT '',
    language      text NOT NULL DEFAULT 'en',
    secret_hash   text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash   bytea NOT NULL UNIQUE,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    device_id    text REFERENCES devices,
    peer         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz
);
CREATE INDEX sessions_open ON sessions (user_id) WHERE ended_at IS NULL;

CREATE TABLE parameters (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    description text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT ''
);

CREATE TABLE dictionary (
    key      text NOT NULL,
    language text NOT NULL,
    text     text NOT NULL,
    PRIMARY KEY (key, language)
);

CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    user_id   uuid,
    username  text NOT NULL DEFAULT '',
    device_id text NOT NULL DEFAULT '',
    method    text NOT NULL,
    outcome   text NOT NULL,
    summary   jsonb NOT NULL DEFAULT '{}',
    peer      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_user ON audit_log (username, at);
