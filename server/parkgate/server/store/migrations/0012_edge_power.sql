-- Power (S30): each site edge's last power report (Site.ReportPower), so Ops.PowerStatus and
-- Ops.ClusterStatus show the edges' machines beside the servers' and the database nodes'. The
-- reports themselves are in the operation log; this is the latest one per edge.
CREATE TABLE edge_power (
    device_id        text PRIMARY KEY REFERENCES devices,
    state            text NOT NULL,
    battery_percent  integer NOT NULL DEFAULT -1,
    runtime_seconds  integer NOT NULL DEFAULT -1,
    source           text NOT NULL DEFAULT '',
    since            timestamptz NOT NULL,
    detail           text NOT NULL DEFAULT '',
    gates_on_battery text[] NOT NULL DEFAULT '{}',
    reported_at      timestamptz NOT NULL DEFAULT now()
);
