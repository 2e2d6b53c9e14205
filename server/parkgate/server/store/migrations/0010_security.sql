-- A tamper-evident operation log: each record carries the keyed hash of its
-- content and of the record before it in its chain. Chains are per day and
-- shard, so concurrent writers lock different head rows; the heads table
-- remembers each chain's last record, so records deleted from the end show too.
-- Records written before this migration have no chain and are not checked.
ALTER TABLE audit_log
    ADD COLUMN chain     text,
    ADD COLUMN seq       bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash      bytea;
CREATE UNIQUE INDEX audit_log_chain_seq ON audit_log (chain, seq) WHERE chain IS NOT NULL;

CREATE TABLE audit_chain_heads (
    chain text PRIMARY KEY,
    seq   bigint NOT NULL,
    hash  bytea NOT NULL
);

-- The outbox of the operation log: a mutating call's transaction stages its
-- record here, so a change that commits always leaves a trace even when the
-- chained record (written after the call) fails; the call's own write removes
-- the row, and the server's drainer moves what is left into the chains.
CREATE TABLE audit_outbox (
    call_id   uuid PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    user_id   uuid,
    username  text NOT NULL DEFAULT '',
    device_id text NOT NULL DEFAULT '',
    method    text NOT NULL,
    summary   jsonb NOT NULL DEFAULT '{}',
    peer      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_outbox_at ON audit_outbox (at);

-- A leaked ticket code: the ticket was reissued with a new serial and code,
-- and the old one (voided) is refused; gates hear these serials (until the
-- code expires) so they refuse the old code offline too.
CREATE TABLE revoked_codes (
    serial      bigint PRIMARY KEY,
    ticket_id   uuid NOT NULL REFERENCES tickets,
    reissued_as uuid NOT NULL REFERENCES tickets,
    valid_until timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    note        text NOT NULL DEFAULT ''
);
CREATE INDEX revoked_codes_valid_until ON revoked_codes (valid_until);
