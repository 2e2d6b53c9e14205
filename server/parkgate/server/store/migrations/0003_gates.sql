-- Gates (S21-S25, S27): the live state of each park, every gate decision,
-- connected gates, command acknowledgements, and the one function that
-- decides a whole batch of validations in one round trip.

-- A ticket's place in the park: what re-entry and occupancy are judged by.
ALTER TABLE tickets
    ADD COLUMN inside        boolean NOT NULL DEFAULT false,
    ADD COLUMN entries_day   date,               -- the park-local day entries_today counts
    ADD COLUMN entries_today integer NOT NULL DEFAULT 0,
    ADD COLUMN last_entry_at timestamptz,
    ADD COLUMN last_exit_at  timestamptz;

-- One row per park, locked by every batch that admits or lets out people at
-- its park gates: occupancy (entries - exits, in persons) is exact because it
-- only ever changes under this lock, in the transaction of the entry itself.
CREATE TABLE park_state (
    park_id         text PRIMARY KEY REFERENCES parks ON DELETE CASCADE,
    inside          bigint NOT NULL DEFAULT 0 CHECK (inside >= 0),
    paused          boolean NOT NULL DEFAULT false,   -- S27: entry paused at the cap until below cap - margin
    emergency       boolean NOT NULL DEFAULT false,   -- S25: all gates open
    emergency_since timestamptz,
    -- when emergency last flipped: names the open/release command every server sends, so acks meet
    emergency_changed_at timestamptz NOT NULL DEFAULT now(),
    changed_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO park_state (park_id) SELECT id FROM parks;

CREATE FUNCTION park_state_for_new_park() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO park_state (park_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
CREATE TRIGGER parks_state AFTER INSERT ON parks FOR EACH ROW EXECUTE FUNCTION park_state_for_new_park();

-- Every decision a gate asked for, allowed or not. The key (device, request)
-- makes a retried request return the first decision and consume nothing twice.
CREATE TABLE validations (
    device_id        text NOT NULL,
    request_id       text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    ticket_id        uuid,
    park_id          text NOT NULL,
    attraction_id    text,
    direction        text NOT NULL CHECK (direction IN ('in', 'out')),
    allow            boolean NOT NULL,
    reason           text NOT NULL,
    persons          integer NOT NULL DEFAULT 0,    -- people moved in (or out) by this decision
    counted          boolean NOT NULL DEFAULT false,  -- consumed a use (a re-entry does not)
    entries_left     integer NOT NULL DEFAULT -1,
    hold_for_check   boolean NOT NULL DEFAULT false,
    awaiting_passage boolean NOT NULL DEFAULT false,  -- the gate will report whether the person passed
    passed_at        timestamptz,
    annulled_at      timestamptz,
    PRIMARY KEY (device_id, request_id)
);
CREATE INDEX validations_at ON validations (at);
CREATE INDEX validations_ticket ON validations (ticket_id, at);
CREATE INDEX validations_awaiting ON validations (at) WHERE awaiting_passage AND passed_at IS NULL
                                                        AND annulled_at IS NULL;

-- Which gate is connected to which server, for ListGates and for knowing
-- which gates must acknowledge an emergency.
CREATE TABLE gate_connections (
    device_id      text PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    server_id      text NOT NULL,
    park_id        text NOT NULL,
    connected      boolean NOT NULL DEFAULT true,
    state          text NOT NULL DEFAULT 'ok',
    connected_at   timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE command_acks (
    command_id text NOT NULL,
    device_id  text NOT NULL,
    done       boolean NOT NULL,
    detail     text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, device_id)
);

-- Capacity hysteresis (S27), in one place: pause at the cap, resume only at
-- or below cap - margin; no cap (0) never pauses.
CREATE FUNCTION capacity_paused(inside bigint, capacity integer, margin integer, paused boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN capacity <= 0 THEN false
        WHEN inside >= capacity THEN true
        WHEN paused AND inside > capacity - margin THEN true
        ELSE false
    END
$$;

-- Moves people in or out of a park under its park_state lock; tells every
-- server (NOTIFY, delivered at commit) when entry pauses or resumes.
CREATE FUNCTION park_move(p_park text, p_delta bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    was boolean;
    now_paused boolean;
BEGIN
    SELECT s.paused INTO was FROM park_state s WHERE s.park_id = p_park;
    UPDATE park_state s
       SET inside = greatest(s.inside + p_delta, 0),
           paused = capacity_paused(greatest(s.inside + p_delta, 0), pk.capacity, pk.capacity_resume_margin, s.paused),
           changed_at = now()
      FROM parks pk
     WHERE s.park_id = p_park AND pk.id = p_park
    RETURNING s.paused INTO now_paused;
    IF now_paused IS DISTINCT FROM was THEN
        PERFORM pg_notify('parkgate_park_state', p_park);
    END IF;
END $$;

-- The decision for a batch of validations, in order, in one transaction.
--
-- The signature and the code's own rules were checked by the server before
-- (native/); this decides what needs the database: the ticket's state,
-- its counts, re-entry, the night window and attractions for IC cards, and
-- the capacity cap. Parks are locked first, in id order, so batches of two
-- servers for one park run one after the other and never deadlock on them.
--
-- Why it looks like this: per item it does only what must see the previous
-- item's effect (lock and update the ticket: the same ticket may come twice);
-- the retried requests, the parks and the decision rows are read and written
-- once per batch, set-wise. (One statement per item costs ~30 us here.)
-- The caller sends each (device, request) at most once per batch.
CREATE FUNCTION admit_batch(
    p_device text[], p_request text[], p_serial bigint[], p_card text[], p_direction text[],
    p_park text[], p_attraction text[], p_await_passage boolean[]
) RETURNS TABLE (ord integer, allow boolean, reason text, ticket_id uuid, entries_left integer, persons integer,
                 hold_for_check boolean, retried boolean)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_request, 1), 0);
    i integer;
    k integer;
    t record;
    rec record;
    -- the batch's parks, locked and read once, written back once
    pk_id text[]; pk_tz text[]; pk_inside bigint[]; pk_paused boolean[]; pk_was_paused boolean[];
    pk_cap integer[]; pk_margin integer[]; pk_moved boolean[];
    -- decisions, by item
    r_allow boolean[] := array_fill(false, ARRAY[n]);
    r_reason text[] := array_fill(NULL::text, ARRAY[n]);
    r_ticket uuid[] := array_fill(NULL::uuid, ARRAY[n]);
    r_left integer[] := array_fill(-1, ARRAY[n]);
    r_persons integer[] := array_fill(0, ARRAY[n]);
    r_moved integer[] := array_fill(0, ARRAY[n]);
    r_counted boolean[] := array_fill(false, ARRAY[n]);
    r_hold boolean[] := array_fill(false, ARRAY[n]);
    r_retried boolean[] := array_fill(false, ARRAY[n]);
    local_now timestamp;
    local_day date;
    minute integer;
    used_today integer;
    reentry boolean;
    park_gate boolean;
    why text;
    counted boolean;
BEGIN
    PERFORM 1 FROM park_state s WHERE s.park_id = ANY(p_park) ORDER BY s.park_id FOR UPDATE;
    SELECT array_agg(s.park_id ORDER BY s.park_id), array_agg(pk.time_zone ORDER BY s.park_id),
           array_agg(s.inside ORDER BY s.park_id), array_agg(s.paused ORDER BY s.park_id),
           array_agg(pk.capacity ORDER BY s.park_id), array_agg(pk.capacity_resume_margin ORDER BY s.park_id)
      INTO pk_id, pk_tz, pk_inside, pk_paused, pk_cap, pk_margin
      FROM park_state s JOIN parks pk ON pk.id = s.park_id WHERE s.park_id = ANY(p_park);
    pk_was_paused := pk_paused;
    pk_moved := array_fill(false, ARRAY[coalesce(array_length(pk_id, 1), 0)]);

    FOR rec IN
        SELECT x.ord AS i, v.* FROM unnest(p_device, p_request) WITH ORDINALITY AS x(device, request, ord)
        JOIN validations v ON v.device_id = x.device AND v.request_id = x.request
    LOOP
        r_retried[rec.i] := true; r_allow[rec.i] := rec.allow; r_reason[rec.i] := rec.reason;
        r_ticket[rec.i] := rec.ticket_id; r_left[rec.i] := rec.entries_left; r_persons[rec.i] := rec.persons;
        r_hold[rec.i] := rec.hold_for_check;
    END LOOP;

    -- Lock every ticket of the batch in one statement, in id order (two batches never wait on each other in a
    -- circle); the loop below then reads them without locking again.
    PERFORM 1 FROM tickets x WHERE x.serial = ANY(p_serial) ORDER BY x.id FOR UPDATE;

    FOR i IN 1 .. n LOOP
        CONTINUE WHEN r_retried[i];
        IF p_serial[i] IS NOT NULL THEN
            SELECT x.* INTO t FROM tickets x WHERE x.serial = p_serial[i];
            why := CASE WHEN FOUND THEN 'OK' ELSE 'UNKNOWN_TICKET' END;
        ELSE
            SELECT x.* INTO t FROM card_bindings b JOIN tickets x ON x.id = b.ticket_id
             WHERE b.card_uid = p_card[i] FOR UPDATE OF x;
            why := CASE WHEN FOUND THEN 'OK' ELSE 'UNKNOWN_CARD' END;
        END IF;
        park_gate := coalesce(p_attraction[i], '') = '';
        counted := false;
        k := NULL;

        IF why = 'OK' THEN
            k := array_position(pk_id, t.park_id);
            IF t.park_id <> p_park[i] OR k IS NULL THEN
                why := 'NOT_VALID_FOR_PARK';
            ELSE
                local_now := now() AT TIME ZONE pk_tz[k];
                local_day := local_now::date;
                minute := extract(hour FROM local_now)::integer * 60 + extract(minute FROM local_now)::integer;
                used_today := CASE WHEN t.entries_day = local_day THEN t.entries_today ELSE 0 END;
                why := CASE
                    WHEN t.state = 'refunded' THEN 'REFUNDED'
                    WHEN t.state = 'voided' THEN 'VOIDED'
                    WHEN now() < t.valid_from THEN 'NOT_YET_VALID'
                    WHEN now() >= t.valid_until THEN 'EXPIRED'
                    WHEN t.valid_days > 0 AND t.first_used_at IS NOT NULL
                         AND local_day >= (t.first_used_at AT TIME ZONE pk_tz[k])::date + t.valid_days THEN 'EXPIRED'
                    ELSE 'OK' END;
            END IF;
        END IF;

        IF why = 'OK' AND p_direction[i] = 'in' THEN
            reentry := park_gate AND t.reentry_allowed AND NOT t.inside AND used_today > 0;
            why := CASE
                WHEN NOT park_gate AND NOT (p_attraction[i] = ANY(t.attraction_ids)) THEN 'NOT_VALID_FOR_ATTRACTION'
                WHEN t.window_start IS NOT NULL AND NOT CASE
                        WHEN t.window_start < t.window_end THEN minute >= t.window_start AND minute < t.window_end
                        ELSE minute >= t.window_start OR minute < t.window_end END THEN 'OUTSIDE_TIME_WINDOW'
                WHEN reentry THEN 'OK'
                WHEN t.entries_total > 0 AND t.entries_used >= t.entries_total THEN
                    CASE WHEN t.last_exit_at IS NOT NULL AND NOT t.inside AND NOT t.reentry_allowed
                              THEN 'REENTRY_NOT_ALLOWED'
                         WHEN t.entries_total = 1 THEN 'ALREADY_USED'
                         ELSE 'NO_ENTRIES_LEFT' END
                WHEN t.entries_per_day > 0 AND used_today >= t.entries_per_day THEN
                    CASE WHEN t.last_exit_at IS NOT NULL AND NOT t.inside AND NOT t.reentry_allowed
                              THEN 'REENTRY_NOT_ALLOWED'
                         ELSE 'DAILY_LIMIT_REACHED' END
                WHEN park_gate AND (pk_paused[k] OR (pk_cap[k] > 0 AND pk_inside[k] + t.persons > pk_cap[k]))
                     THEN 'PARK_FULL'
                ELSE 'OK' END;
            IF why = 'OK' THEN
                counted := NOT reentry;
                UPDATE tickets x SET
                    entries_used = x.entries_used + counted::integer,
                    entries_today = used_today + counted::integer,
                    entries_day = local_day,
                    first_used_at = coalesce(x.first_used_at, now()),
                    inside = x.inside OR park_gate,
                    last_entry_at = now()
                 WHERE x.id = t.id;
                t.entries_used := t.entries_used + counted::integer;
                IF park_gate THEN
                    pk_inside[k] := pk_inside[k] + t.persons;
                    pk_paused[k] := capacity_paused(pk_inside[k], pk_cap[k], pk_margin[k], pk_paused[k]);
                    pk_moved[k] := true;
                    r_moved[i] := t.persons;
                END IF;
            END IF;
        ELSIF why = 'OK' THEN  -- an exit: always let people out; occupancy only counts who was inside
            IF park_gate AND t.inside THEN
                UPDATE tickets x SET inside = false, last_exit_at = now() WHERE x.id = t.id;
                pk_inside[k] := greatest(pk_inside[k] - t.persons, 0);
                pk_paused[k] := capacity_paused(pk_inside[k], pk_cap[k], pk_margin[k], pk_paused[k]);
                pk_moved[k] := true;
                r_moved[i] := t.persons;
            ELSIF park_gate THEN
                why := 'NOT_INSIDE';
            END IF;
        END IF;

        r_allow[i] := why = 'OK' OR (p_direction[i] = 'out' AND why = 'NOT_INSIDE');
        r_reason[i] := why;
        r_ticket[i] := t.id;
        r_left[i] := CASE WHEN t.id IS NULL OR t.entries_total = 0 THEN -1 ELSE t.entries_total - t.entries_used END;
        r_persons[i] := CASE WHEN r_allow[i] THEN coalesce(t.persons, 1) ELSE 0 END;
        r_hold[i] := r_allow[i] AND coalesce(t.hold_for_check, false) AND p_direction[i] = 'in';
        r_counted[i] := counted;
        t := NULL;
    END LOOP;

    INSERT INTO validations (device_id, request_id, ticket_id, park_id, attraction_id, direction, allow, reason,
                             persons, counted, entries_left, hold_for_check, awaiting_passage)
    SELECT x.device, x.request, x.ticket, x.park, nullif(x.attraction, ''), x.direction, x.allow, x.reason,
           x.moved, x.counted, x.left_, x.hold, x.allow AND x.direction = 'in' AND coalesce(x.await, false)
      FROM unnest(p_device, p_request, r_ticket, p_park, p_attraction, p_direction, r_allow, r_reason, r_moved,
                  r_counted, r_left, r_hold, p_await_passage, r_retried)
           AS x(device, request, ticket, park, attraction, direction, allow, reason, moved, counted, left_, hold,
                await, retried)
     WHERE NOT x.retried;

    FOR k IN 1 .. coalesce(array_length(pk_id, 1), 0) LOOP
        CONTINUE WHEN NOT pk_moved[k];
        UPDATE park_state s SET inside = pk_inside[k], paused = pk_paused[k], changed_at = now()
         WHERE s.park_id = pk_id[k];
        IF pk_paused[k] IS DISTINCT FROM pk_was_paused[k] THEN
            PERFORM pg_notify('parkgate_park_state', pk_id[k]);
        END IF;
    END LOOP;

    RETURN QUERY SELECT x.ord::integer, x.allow, x.reason, x.ticket, x.left_, x.persons, x.hold, x.retried
      FROM unnest(r_allow, r_reason, r_ticket, r_left, r_persons, r_hold, r_retried) WITH ORDINALITY
           AS x(allow, reason, ticket, left_, persons, hold, retried, ord);
END $$;

-- Gives back an admission whose person never passed (the turnstile did not
-- turn): the use, the day's count, the place inside. Once only.
CREATE FUNCTION annul_admission(p_device text, p_request text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v validations%ROWTYPE;
BEGIN
    SELECT * INTO v FROM validations x
     WHERE x.device_id = p_device AND x.request_id = p_request AND x.allow AND x.direction = 'in'
       AND x.passed_at IS NULL AND x.annulled_at IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v.attraction_id IS NULL THEN
        PERFORM 1 FROM park_state s WHERE s.park_id = v.park_id FOR UPDATE;
    END IF;
    UPDATE validations x SET annulled_at = now(), reason = 'PASSAGE_NOT_CONFIRMED'
     WHERE x.device_id = p_device AND x.request_id = p_request;
    UPDATE tickets t SET
        entries_used = t.entries_used - v.counted::integer,
        entries_today = greatest(t.entries_today - v.counted::integer, 0),
        inside = CASE WHEN v.attraction_id IS NULL THEN false ELSE t.inside END
     WHERE t.id = v.ticket_id;
    IF v.attraction_id IS NULL THEN
        PERFORM park_move(v.park_id, -v.persons);
    END IF;
    RETURN true;
END $$;
