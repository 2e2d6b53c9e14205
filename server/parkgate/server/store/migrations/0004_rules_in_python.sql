-- The gate rules moved out of PL/pgSQL into the decision engine (parkgate.rules,
-- plain Python run by the server, the gate agent and site edges alike). The
-- database keeps what only it can do: row locks, the counters, and exactly
-- one decision per (device, request). Nothing here decides anything.
DROP FUNCTION IF EXISTS admit_batch(text[], text[], bigint[], text[], text[], text[], text[], boolean[]);
DROP FUNCTION IF EXISTS annul_admission(text, text);
DROP FUNCTION IF EXISTS park_move(text, bigint);
DROP FUNCTION IF EXISTS capacity_paused(bigint, integer, integer, boolean);
