-- Power (S30): each gate's last word on its mains, from its heartbeats.
ALTER TABLE gate_connections ADD COLUMN on_battery boolean NOT NULL DEFAULT false;
ALTER TABLE gate_connections ADD COLUMN on_battery_since timestamptz;
