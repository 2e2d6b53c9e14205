"""SQL of the gate pipeline: lock and read what a batch needs, then write what the decision engine decided.

A batch is one transaction in two round trips (psycopg pipeline mode):

1. lock the batch's parks (in id order: batches of two servers for one park
   run one after the other, and a retried request finds the first decision
   committed), read prior decisions of the batch's request ids, lock and
   read its tickets (in id order: no deadlock between batches);
2. the caller decides in Python (:mod:`parkgate.server.domain.admission`),
   then every ticket change, decision row and park counter is written
   set-wise, and COMMIT travels in the same round trip.

The rows come back as the engine's own types (:mod:`parkgate.rules`): no
caller reads a column name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from parkgate.common.reason import Reason
from parkgate.rules import ParkState, TicketState
from parkgate.server.domain.admission import Decision
from parkgate.server.domain.pricing import CalendarEntry

from .database import Connection

#: The channel a park's pause, resume or emergency is NOTIFYed on (at commit), to every server.
PARK_STATE_CHANNEL = "parkgate_park_state"


@dataclass(frozen=True, slots=True)
class LockedPark:
    state: ParkState
    time_zone: str


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One row of ``validations``: a decision as it is kept for retries, passage reports and reports."""

    device_id: str
    request_id: str
    ticket_id: str | None
    park_id: str
    attraction_id: str
    direction: str
    allow: bool
    reason: str
    moved: int            # people moved in or out of the park (0 at attractions and for refusals)
    counted: bool
    entries_left: int
    hold_for_check: bool
    awaiting_passage: bool
    charged: int = 0
    balance: int | None = None


_TICKET_COLUMNS = """t.id::text AS ticket_id, t.serial, t.park_id, t.state,
    extract(epoch FROM t.valid_from)::float8 AS valid_from, extract(epoch FROM t.valid_until)::float8 AS valid_until,
    t.valid_days, t.persons, t.entries_total, t.entries_per_day, t.reentry_allowed, t.hold_for_check,
    t.attraction_ids, t.window_start, t.window_end, t.entries_used, t.entries_day, t.entries_today,
    extract(epoch FROM t.first_used_at)::float8 AS first_used_at, t.inside,
    extract(epoch FROM t.last_entry_at)::float8 AS last_entry_at,
    extract(epoch FROM t.last_exit_at)::float8 AS last_exit_at,
    t.balance, t.blocked_at IS NOT NULL AS blocked, t.attraction_limits, t.attraction_used"""


def ticket_state(row: dict) -> TicketState:
    window = (row["window_start"], row["window_end"]) if row["window_start"] is not None else None
    return TicketState(
        ticket_id=row["ticket_id"], serial=row["serial"], park_id=row["park_id"], status=row["state"],
        valid_from=row["valid_from"], valid_until=row["valid_until"], valid_days=row["valid_days"],
        persons=row["persons"], entries_total=row["entries_total"], entries_per_day=row["entries_per_day"],
        reentry_allowed=row["reentry_allowed"], hold_for_check=row["hold_for_check"],
        attraction_ids=frozenset(row["attraction_ids"]), window=window, entries_used=row["entries_used"],
        entries_day=row["entries_day"], entries_today=row["entries_today"], first_used_at=row["first_used_at"],
        inside=row["inside"], last_entry_at=row["last_entry_at"], last_exit_at=row["last_exit_at"],
        blocked=row["blocked"], balance=row["balance"],
        attraction_limits={k: int(v) for k, v in (row["attraction_limits"] or {}).items()},
        attraction_used={k: int(v) for k, v in (row["attraction_used"] or {}).items()},
    )


_PARK_COLUMNS = """s.park_id, s.inside, s.paused, s.emergency, pk.capacity, pk.capacity_resume_margin,
    pk.time_zone"""


def _park(row: dict) -> LockedPark:
    return LockedPark(ParkState(park_id=row["park_id"], inside=row["inside"], capacity=row["capacity"],
                                resume_margin=row["capacity_resume_margin"], paused=row["paused"],
                                emergency=row["emergency"]), row["time_zone"])


@dataclass(slots=True)
class Locked:
    """What round trip 1 read, under its locks."""

    parks: dict[str, LockedPark]
    prior: dict[tuple[str, str], Decision]  # decisions already recorded for these request ids, marked retried
    by_serial: dict[int, TicketState]
    by_card: dict[str, TicketState]
    # stored value (S8): attraction -> {day type: fare}, "" = the attraction's flat price
    fares: dict[str, dict[str, int]] = field(default_factory=dict)
    calendar: dict[str, dict[date, CalendarEntry]] = field(default_factory=dict)  # park -> holidays near today
    photos: dict[str, str] = field(default_factory=dict)  # ticket id -> photo ref of its member (S15)
    swallow: set[str] = field(default_factory=set)  # tickets whose used-up card the exit collector takes (S21)


async def lock_batch(conn: Connection, park_ids: Iterable[str], keys: Sequence[tuple[str, str]],
                     serials: Sequence[int], cards: Sequence[str], attractions: Sequence[str] = ()) -> Locked:
    """Round trip 1: lock the parks, find retried requests, lock the tickets (by serial or bound card).

    A card reported lost and replaced (``lost_cards``) finds its old ticket,
    marked blocked, so the engine refuses it with CARD_BLOCKED.
    """
    parks_cur = await conn.execute(
        f"""SELECT {_PARK_COLUMNS} FROM park_state s JOIN parks pk ON pk.id = s.park_id
            WHERE s.park_id = ANY(%s::text[]) ORDER BY s.park_id FOR UPDATE OF s""",
        (sorted(set(park_ids)),),
    )
    prior_cur = await conn.execute(
        """SELECT v.device_id, v.request_id, v.allow, v.reason, coalesce(v.ticket_id::text, '') AS ticket_id,
                  v.entries_left, v.persons, v.hold_for_check, v.balance
           FROM unnest(%s::text[], %s::text[]) AS x(device, request)
           JOIN validations v ON v.device_id = x.device AND v.request_id = x.request""",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    tickets_cur = await conn.execute(
        f"""SELECT {_TICKET_COLUMNS}, b.card_uid, coalesce((
                SELECT (v.rules->>'swallow_card_at_exit')::boolean FROM product_versions v
                WHERE v.product_id = t.product_id AND v.version = t.product_version), false) AS swallow
            FROM tickets t LEFT JOIN card_bindings b ON b.ticket_id = t.id
            WHERE t.id IN (SELECT id FROM tickets WHERE serial = ANY(%s::bigint[])
                           UNION ALL SELECT ticket_id FROM card_bindings WHERE card_uid = ANY(%s::text[])
                           UNION ALL SELECT ticket_id FROM lost_cards WHERE card_uid = ANY(%s::text[]))
            ORDER BY t.id FOR UPDATE OF t""",
        (list(serials), list(cards), list(cards)),
    )
    extra = await _catalogue_queries(conn, sorted(set(park_ids)), cards, attractions)
    parks = {r["park_id"]: _park(r) for r in await parks_cur.fetchall()}
    prior = {(r["device_id"], r["request_id"]): Decision(
        r["allow"], Reason(r["reason"]), r["ticket_id"], r["entries_left"], r["persons"], r["hold_for_check"],
        retried=True, balance=r["balance"]) for r in await prior_cur.fetchall()}
    by_serial: dict[int, TicketState] = {}
    by_card: dict[str, TicketState] = {}
    swallow: set[str] = set()
    for row in await tickets_cur.fetchall():
        ticket = ticket_state(row)
        if row["swallow"]:
            swallow.add(ticket.ticket_id)
        by_serial[ticket.serial] = ticket
        if row["card_uid"]:
            by_card[row["card_uid"]] = ticket
    lost, fares, calendar, photos = await _catalogue_rows(*extra)
    by_id = {t.ticket_id: t for t in by_serial.values()}
    for uid, ticket_id in lost.items():  # the old card of a reissue: its ticket (locked above), refused
        if ticket_id in by_id:
            by_card.setdefault(uid, replace(by_id[ticket_id], blocked=True))
    return Locked(parks, prior, by_serial, by_card, fares, calendar, photos, swallow)


async def _catalogue_queries(conn: Connection, park_ids: list[str], cards: Sequence[str],
                             attractions: Sequence[str]) -> tuple[AsyncCursor, AsyncCursor, AsyncCursor, AsyncCursor]:
    """Sent in the same round trip as the locks: lost cards, today's fares, the calendar, members' photos."""
    lost_cur = await conn.execute(
        """SELECT l.card_uid, l.ticket_id::text AS ticket_id FROM lost_cards l
           WHERE l.card_uid = ANY(%s::text[]) AND NOT EXISTS (SELECT 1 FROM card_bindings b
                                                            WHERE b.card_uid = l.card_uid)""",
        (list(cards),),
    )
    fares_cur = await conn.execute(
        """SELECT a.id AS attraction_id, '' AS day_type, a.stored_value_price AS amount FROM attractions a
           WHERE a.id = ANY(%s::text[])
           UNION ALL SELECT f.attraction_id, f.day_type, f.amount FROM attraction_fares f
           WHERE f.attraction_id = ANY(%s::text[])""",
        (list(attractions), list(attractions)),
    )
    calendar_cur = await conn.execute(
        """SELECT park_id, day, day_type, name FROM holidays
           WHERE park_id = ANY(%s::text[]) AND day BETWEEN current_date - 1 AND current_date + 1""",
        (park_ids,),
    )
    photos_cur = await conn.execute(
        """SELECT m.ticket_id::text AS ticket_id, m.id::text AS member_id FROM members m
           WHERE m.photo IS NOT NULL AND m.ticket_id IN (
               SELECT ticket_id FROM card_bindings WHERE card_uid = ANY(%s::text[]))""",
        (list(cards),),
    )
    return lost_cur, fares_cur, calendar_cur, photos_cur


async def _catalogue_rows(
    lost_cur: AsyncCursor, fares_cur: AsyncCursor, calendar_cur: AsyncCursor, photos_cur: AsyncCursor,
) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, dict[date, CalendarEntry]], dict[str, str]]:
    lost = {r["card_uid"]: r["ticket_id"] for r in await lost_cur.fetchall()}
    fares: dict[str, dict[str, int]] = {}
    for r in await fares_cur.fetchall():
        fares.setdefault(r["attraction_id"], {})[r["day_type"]] = int(r["amount"])
    calendar: dict[str, dict[date, CalendarEntry]] = {}
    for r in await calendar_cur.fetchall():
        calendar.setdefault(r["park_id"], {})[r["day"]] = CalendarEntry(r["day_type"], r["name"])
    photos = {r["ticket_id"]: r["member_id"] for r in await photos_cur.fetchall()}
    return lost, fares, calendar, photos


async def write_batch(conn: Connection, now: float, tickets: Sequence[TicketState], rows: Sequence[DecisionRow],
                      parks: Sequence[ParkState], notify: Sequence[str]) -> None:
    """Round trip 2 (with the COMMIT the caller's pipeline sends): the engine's changes, set-wise."""
    if tickets:
        await conn.execute(
            """UPDATE tickets t SET entries_used = x.used, entries_today = x.today, entries_day = x.day,
                   first_used_at = to_timestamp(x.first_used), inside = x.inside,
                   last_entry_at = to_timestamp(x.last_in), last_exit_at = to_timestamp(x.last_out),
                   balance = x.balance, attraction_used = x.by_attraction
               FROM unnest(%s::uuid[], %s::int[], %s::int[], %s::date[], %s::float8[], %s::bool[], %s::float8[],
                           %s::float8[], %s::bigint[], %s::jsonb[])
                    AS x(id, used, today, day, first_used, inside, last_in, last_out, balance, by_attraction)
               WHERE t.id = x.id""",
            ([t.ticket_id for t in tickets], [t.entries_used for t in tickets], [t.entries_today for t in tickets],
             [t.entries_day for t in tickets], [t.first_used_at for t in tickets], [t.inside for t in tickets],
             [t.last_entry_at for t in tickets], [t.last_exit_at for t in tickets], [t.balance for t in tickets],
             [Jsonb(dict(t.attraction_used)) for t in tickets]),
        )
    if rows:
        await conn.execute(
            """INSERT INTO validations (device_id, request_id, at, ticket_id, park_id, attraction_id, direction, allow,
                                        reason, persons, counted, entries_left, hold_for_check, awaiting_passage,
                                        charged, balance)
               SELECT x.device, x.request, to_timestamp(%s), x.ticket, x.park, nullif(x.attraction, ''), x.direction,
                      x.allow, x.reason, x.moved, x.counted, x.left_, x.hold, x.await, x.charged, x.balance
               FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::bool[],
                           %s::text[], %s::int[], %s::bool[], %s::int[], %s::bool[], %s::bool[], %s::bigint[],
                           %s::bigint[])
                    AS x(device, request, ticket, park, attraction, direction, allow, reason, moved, counted, left_,
                         hold, await, charged, balance)""",
            (now, [r.device_id for r in rows], [r.request_id for r in rows], [r.ticket_id for r in rows],
             [r.park_id for r in rows], [r.attraction_id for r in rows], [r.direction for r in rows],
             [r.allow for r in rows], [r.reason for r in rows], [abs(r.moved) for r in rows],
             [r.counted for r in rows], [r.entries_left for r in rows], [r.hold_for_check for r in rows],
             [r.awaiting_passage for r in rows], [r.charged for r in rows], [r.balance for r in rows]),
        )
    if parks:
        await write_parks(conn, now, parks)
    if notify:
        await conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (PARK_STATE_CHANNEL, list(notify)))


async def write_parks(conn: Connection, now: float, parks: Sequence[ParkState]) -> None:
    await conn.execute(
        """UPDATE park_state s SET inside = x.inside, paused = x.paused, changed_at = to_timestamp(%s)
           FROM unnest(%s::text[], %s::bigint[], %s::bool[]) AS x(park, inside, paused) WHERE s.park_id = x.park""",
        (now, [p.park_id for p in parks], [p.inside for p in parks], [p.paused for p in parks]),
    )


# --- giving an admission back (the person never passed) ------------------------------------------

@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """An admission waiting for (or given up on) its passage report, locked."""

    park_id: str
    park_gate: bool
    moved: int
    counted: bool
    ticket: TicketState | None
    charged: int = 0
    attraction_id: str = ""


async def lock_unconfirmed(conn: Connection, device_id: str, request_id: str) -> Unconfirmed | None:
    """Lock an allowed entry not yet passed nor annulled, with its park (first) and its ticket."""
    cur = await conn.execute(
        """SELECT park_id, attraction_id IS NULL AS park_gate, persons, counted, ticket_id::text AS ticket_id,
                  charged, coalesce(attraction_id, '') AS attraction_id
           FROM validations WHERE device_id = %s AND request_id = %s AND allow AND direction = 'in'
             AND passed_at IS NULL AND annulled_at IS NULL""",
        (device_id, request_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    if row["park_gate"]:
        await conn.execute("SELECT 1 FROM park_state WHERE park_id = %s FOR UPDATE", (row["park_id"],))
    cur = await conn.execute(
        "SELECT 1 FROM validations WHERE device_id = %s AND request_id = %s AND passed_at IS NULL "
        "AND annulled_at IS NULL FOR UPDATE", (device_id, request_id))
    if await cur.fetchone() is None:  # another server annulled or confirmed it meanwhile
        return None
    ticket = None
    if row["ticket_id"]:
        cur = await conn.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets t WHERE t.id = %s FOR UPDATE",
                                 (row["ticket_id"],))
        found = await cur.fetchone()
        ticket = ticket_state(found) if found else None
    return Unconfirmed(row["park_id"], row["park_gate"], row["persons"], row["counted"], ticket, row["charged"],
                       row["attraction_id"])


async def mark_annulled(conn: Connection, device_id: str, request_id: str, now: float) -> None:
    await conn.execute(
        """UPDATE validations SET annulled_at = to_timestamp(%s), reason = 'PASSAGE_NOT_CONFIRMED'
           WHERE device_id = %s AND request_id = %s""",
        (now, device_id, request_id),
    )


async def write_ticket_uses(conn: Connection, ticket: TicketState) -> None:
    await conn.execute(
        """UPDATE tickets SET entries_used = %s, entries_today = %s, inside = %s, balance = %s,
                  attraction_used = %s WHERE id = %s""",
        (ticket.entries_used, ticket.entries_today, ticket.inside, ticket.balance, Jsonb(dict(ticket.attraction_used)),
         ticket.ticket_id),
    )


async def lock_park(conn: Connection, park_id: str) -> LockedPark | None:
    cur = await conn.execute(
        f"""SELECT {_PARK_COLUMNS} FROM park_state s JOIN parks pk ON pk.id = s.park_id
            WHERE s.park_id = %s FOR UPDATE OF s""",
        (park_id,),
    )
    row = await cur.fetchone()
    return _park(row) if row else None


async def notify_park(conn: Connection, park_id: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (PARK_STATE_CHANNEL, park_id))


async def unconfirmed_due(conn: Connection, older_than_seconds: float, limit: int = 500) -> list[tuple[str, str]]:
    """(device, request) of admissions still waiting for their passage report after the timeout."""
    cur = await conn.execute(
        """SELECT device_id, request_id FROM validations
           WHERE awaiting_passage AND passed_at IS NULL AND annulled_at IS NULL
             AND at < now() - make_interval(secs => %s)
           ORDER BY at LIMIT %s""",
        (older_than_seconds, limit),
    )
    return [(r["device_id"], r["request_id"]) for r in await cur.fetchall()]


# --- what a gate needs to decide offline -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProductCounting:
    """A product's number (as codes carry it), kind and stored rules: the gate's offline terms come from it."""

    number: int
    kind: str
    rules: dict


async def park_products(conn: Connection, park_id: str) -> list[ProductCounting]:
    cur = await conn.execute(
        """SELECT p.number, v.kind, v.rules FROM products p
           JOIN product_versions v ON v.product_id = p.id AND v.version = p.current_version
           WHERE p.park_id = %s ORDER BY p.number""",
        (park_id,),
    )
    return [ProductCounting(r["number"], r["kind"], dict(r["rules"] or {})) for r in await cur.fetchall()]
