-- Live flow (S26): per-minute counters and alerts the gate pipeline of every
-- server flushes about once a second, so a LiveFlow stream on any server sees
-- the flow through all of them (the database is the truth across servers).
--
-- Why counters and not a scan of validations: at thousands of validations a
-- second, every snapshot of every wall screen would aggregate millions of
-- rows. Refusals decided before the database (forged or garbled codes) are
-- never written to validations at all; they are counted here.

CREATE TABLE flow_counts (
    park_id   text NOT NULL,
    minute    timestamptz NOT NULL,          -- the start of the minute
    device_id text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('in', 'out', 'ride', 'refused')),
    reason    text NOT NULL,                  -- OK for admissions, the refusal's reason otherwise
    n         bigint NOT NULL DEFAULT 0,      -- validations
    persons   bigint NOT NULL DEFAULT 0,      -- people moved in or out of the park
    PRIMARY KEY (park_id, minute, device_id, kind, reason)
);
CREATE INDEX flow_counts_minute ON flow_counts (minute);

CREATE TABLE flow_alerts (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    park_id    text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('forged_code', 'fast_mode_refusal', 'conflict')),
    device_id  text NOT NULL,
    reason     text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    detail     text NOT NULL DEFAULT '',
    server_id  text NOT NULL DEFAULT ''
);
CREATE INDEX flow_alerts_park_at ON flow_alerts (park_id, at DESC);
