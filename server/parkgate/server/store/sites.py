"""SQL of the cluster's side of a site: site keys and serial blocks, the feed, forward cursors, conflicts.

The feed's change mark on each row is ``feed_xid``: the id of the
transaction that last wrote it (set by triggers, migration 0005). A feed
read takes one snapshot and its horizon (the oldest transaction still
running, ``pg_snapshot_xmin``): every change by a transaction below the
horizon is visible in that snapshot, so "everything from horizon h on" is a
cursor that never steps over a row committed late.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from parkgate.rules import TicketState

from .admissions import _TICKET_COLUMNS, ticket_state
from .catalog import _ATTRACTION
from .database import Connection, connection_errors_to_domain
from .fetch import fetch_all, fetch_one
from .rows.catalog import Attraction, Holiday, Park, Price, Product
from .rows.sites import (
    ConflictRow,
    EarlierAdmission,
    FeedCard,
    FeedDevice,
    FeedKey,
    FeedOperator,
    FeedRemoval,
    SerialBlock,
    SiteKey,
)

#: NOTIFYed (at commit) when a signing key is added or revoked: every server re-reads its keyring.
KEYS_CHANNEL = "parkgate_keys"

# --- site keys and serial blocks --------------------------------------------------------------


async def notify_keys(conn: Connection) -> None:
    await conn.execute("SELECT pg_notify(%s, '')", (KEYS_CHANNEL,))


async def site_key_by_public(conn: Connection, public_key: bytes) -> SiteKey | None:
    return await fetch_one(conn, SiteKey, "SELECT key_id, site, state FROM signing_keys WHERE public_key = %s",
                           (public_key,))


async def add_site_key(conn: Connection, key_id: int, public_key: bytes, site: str) -> None:
    await conn.execute("INSERT INTO signing_keys (key_id, seed, public_key, site) VALUES (%s, NULL, %s, %s)",
                       (key_id, public_key, site))


async def lock_key_ids(conn: Connection) -> None:
    """Serialise new key ids (two edges provisioning at once must not pick the same id)."""
    await conn.execute("SELECT pg_advisory_xact_lock(7061727)")


async def reserve_serials(conn: Connection, key_id: int, site: str, device_id: str, count: int) -> SerialBlock:
    """A block of ``count`` serials no central sale and no other site will ever use (above 2^40)."""
    row = await fetch_one(
        conn, SerialBlock,
        """WITH taken AS (UPDATE site_serial_next SET next = next + %(n)s RETURNING next - %(n)s AS first)
           INSERT INTO site_serial_blocks (serial_first, key_id, site, device_id, serial_last)
           SELECT first, %(key)s, %(site)s, %(device)s, first + %(n)s - 1 FROM taken
           RETURNING key_id, serial_first, serial_last""",
        {"n": count, "key": key_id, "site": site, "device": device_id},
    )
    assert row is not None
    return row


async def serial_reserved(conn: Connection, site: str, key_id: int, serial: int) -> bool:
    cur = await conn.execute(
        """SELECT 1 FROM site_serial_blocks WHERE site = %s AND key_id = %s
             AND %s BETWEEN serial_first AND serial_last""",
        (site, key_id, serial),
    )
    return await cur.fetchone() is not None


async def site_public_keys(conn: Connection, site: str) -> list[FeedKey]:
    return await fetch_all(conn, FeedKey,
                           "SELECT key_id, public_key, state FROM signing_keys WHERE site = %s ORDER BY key_id",
                           (site,))


async def lock_key(conn: Connection, key_id: int) -> SiteKey | None:
    return await fetch_one(conn, SiteKey, "SELECT key_id, site, state FROM signing_keys WHERE key_id = %s FOR UPDATE",
                           (key_id,))


async def revoke_key(conn: Connection, key_id: int) -> SiteKey | None:
    return await fetch_one(
        conn, SiteKey,
        "UPDATE signing_keys SET state = 'revoked' WHERE key_id = %s RETURNING key_id, site, state", (key_id,),
    )


# --- the feed ------------------------------------------------------------------------------------


async def feed_horizon(conn: Connection) -> int:
    """This snapshot's horizon: every transaction below it is finished (committed or not)."""
    cur = await conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS h")
    row = await cur.fetchone()
    assert row is not None
    return int(row["h"])


async def next_transaction(conn: Connection) -> int:
    cur = await conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x")
    row = await cur.fetchone()
    assert row is not None
    return int(row["x"])


async def prune_removals(conn: Connection, older_than_seconds: float) -> None:
    """Forget removal marks past the feed's history; a cursor from before them needs a full resync."""
    await conn.execute(
        """WITH gone AS (DELETE FROM feed_removals WHERE at < now() - make_interval(secs => %s) RETURNING feed_xid)
           INSERT INTO parameters (key, value, description, updated_by)
           SELECT 'site.feed_pruned_below', to_jsonb(max(feed_xid)::text::bigint + 1),
                  'Feed cursors below this need a full resync (removal marks were pruned)', 'feed'
             FROM gone HAVING count(*) > 0
           ON CONFLICT (key) DO UPDATE SET value = to_jsonb(greatest(
               excluded.value::text::bigint, parameters.value::text::bigint)), updated_at = now()""",
        (older_than_seconds,),
    )


async def pruned_below(conn: Connection) -> int:
    cur = await conn.execute("SELECT value::text::bigint AS v FROM parameters WHERE key = 'site.feed_pruned_below'")
    row = await cur.fetchone()
    return int(row["v"]) if row else 0


async def site_park_ids(conn: Connection, site: str) -> list[str]:
    """The parks a site's devices stand at; every park when none names one."""
    cur = await conn.execute(
        """SELECT DISTINCT park_id FROM devices WHERE site = %s AND park_id IS NOT NULL
           UNION SELECT id FROM parks WHERE NOT EXISTS (
               SELECT 1 FROM devices WHERE site = %s AND park_id IS NOT NULL)""",
        (site, site),
    )
    return sorted(r["park_id"] for r in await cur.fetchall())


_SINCE = "feed_xid >= %(since)s::text::xid8"


async def changed_parks(conn: Connection, parks: Sequence[str], since: int) -> list[Park]:
    """Parks changed themselves or through their attractions or products (both shape a gate's terms)."""
    return await fetch_all(
        conn, Park,
        f"""SELECT id, name, time_zone, currency, capacity, capacity_resume_margin, disabled, number FROM parks p
            WHERE p.id = ANY(%(parks)s) AND (p.{_SINCE}
               OR EXISTS (SELECT 1 FROM attractions a WHERE a.park_id = p.id AND a.{_SINCE})
               OR EXISTS (SELECT 1 FROM products x WHERE x.park_id = p.id AND x.{_SINCE}))
            ORDER BY p.id""",
        {"parks": list(parks), "since": since},
    )


async def park_attractions(conn: Connection, park_id: str) -> list[Attraction]:
    return await fetch_all(
        conn, Attraction,
        f"SELECT {_ATTRACTION} FROM attractions a JOIN parks pk ON pk.id = a.park_id WHERE a.park_id = %s",
        (park_id,),
    )


async def park_fares(conn: Connection, park_id: str) -> list[tuple[str, str, int]]:
    """What each attraction of the park charges a stored-value card: (attraction, day type or "" = flat, amount)."""
    cur = await conn.execute(
        """SELECT a.id AS attraction_id, '' AS day_type, a.stored_value_price AS amount FROM attractions a
           WHERE a.park_id = %(park)s AND a.stored_value_price > 0
           UNION ALL SELECT f.attraction_id, f.day_type, f.amount FROM attraction_fares f
           JOIN attractions a ON a.id = f.attraction_id WHERE a.park_id = %(park)s""",
        {"park": park_id},
    )
    return [(r["attraction_id"], r["day_type"], int(r["amount"])) for r in await cur.fetchall()]


async def current_transaction(conn: Connection) -> int:
    """This transaction's id: a feed snapshot whose horizon is above it sees what it wrote."""
    cur = await conn.execute("SELECT pg_current_xact_id()::text::bigint AS x")
    row = await cur.fetchone()
    assert row is not None
    return int(row["x"])


async def changed_keys(conn: Connection, since: int) -> list[FeedKey]:
    return await fetch_all(conn, FeedKey,
                           f"SELECT key_id, public_key, state FROM signing_keys WHERE {_SINCE} ORDER BY key_id",
                           {"since": since})


async def changed_products(conn: Connection, parks: Sequence[str], since: int) -> list[Product]:
    return await fetch_all(
        conn, Product,
        f"""SELECT p.id, p.park_id, v.name, v.kind, v.rules, v.version, p.on_sale, p.updated_at, p.number,
                   pk.currency
            FROM products p JOIN product_versions v ON v.product_id = p.id AND v.version = p.current_version
            JOIN parks pk ON pk.id = p.park_id
            WHERE p.park_id = ANY(%(parks)s) AND p.{_SINCE} ORDER BY p.id""",
        {"parks": list(parks), "since": since},
    )


async def changed_prices(conn: Connection, parks: Sequence[str], since: int) -> list[Price]:
    return await fetch_all(
        conn, Price,
        f"""SELECT x.product_id, x.day_type, x.peak_name, x.amount, pk.currency
            FROM prices x JOIN products p ON p.id = x.product_id JOIN parks pk ON pk.id = p.park_id
            WHERE p.park_id = ANY(%(parks)s) AND x.{_SINCE} ORDER BY x.product_id, x.day_type, x.peak_name""",
        {"parks": list(parks), "since": since},
    )


async def changed_holidays(conn: Connection, parks: Sequence[str], since: int) -> list[Holiday]:
    return await fetch_all(
        conn, Holiday,
        f"""SELECT park_id, day, day_type, name FROM holidays
            WHERE park_id = ANY(%(parks)s) AND {_SINCE} ORDER BY park_id, day""",
        {"parks": list(parks), "since": since},
    )


async def changed_operators(conn: Connection, since: int) -> list[FeedOperator]:
    return await fetch_all(
        conn, FeedOperator,
        f"""SELECT u.username, u.password_hash, u.disabled, u.display_name,
                   coalesce((SELECT array_agg(DISTINCT rp.permission ORDER BY rp.permission)
                             FROM user_roles r JOIN role_permissions rp ON rp.role = r.role
                             WHERE r.user_id = u.id), '{{}}') AS permissions
            FROM users u WHERE u.{_SINCE} ORDER BY u.username""",
        {"since": since},
    )


async def changed_devices(conn: Connection, site: str, since: int) -> list[FeedDevice]:
    return await fetch_all(
        conn, FeedDevice,
        f"""SELECT id, kind, secret_hash, coalesce(park_id, '') AS park_id,
                   coalesce(attraction_id, '') AS attraction_id, coalesce(direction, '') AS direction, disabled
            FROM devices WHERE site = %(site)s AND {_SINCE} ORDER BY id""",
        {"site": site, "since": since},
    )


async def changed_cards(conn: Connection, parks: Sequence[str], since: int) -> list[FeedCard]:
    return await fetch_all(
        conn, FeedCard,
        f"""SELECT b.card_uid, b.ticket_id::text AS ticket_id FROM card_bindings b JOIN tickets t ON t.id = b.ticket_id
            WHERE t.park_id = ANY(%(parks)s) AND b.{_SINCE} ORDER BY b.card_uid""",
        {"parks": list(parks), "since": since},
    )


async def changed_tickets(conn: Connection, parks: Sequence[str], since: int, after: str,
                          limit: int) -> list[tuple[TicketState, int]]:
    """Live tickets (not expired) changed since the cursor, a page at a time in id order."""
    cur = await conn.execute(
        f"""SELECT {_TICKET_COLUMNS}, p.number AS product_number FROM tickets t
            JOIN products p ON p.id = t.product_id
            WHERE t.park_id = ANY(%(parks)s) AND t.{_SINCE} AND t.valid_until > now() AND t.id > %(after)s::uuid
            ORDER BY t.id LIMIT %(limit)s""",
        {"parks": list(parks), "since": since, "after": after or "00000000-0000-0000-0000-000000000000",
         "limit": limit},
    )
    rows = await cur.fetchall()
    return [(ticket_state(r), int(r["product_number"])) for r in rows]


async def changed_removals(conn: Connection, parks: Sequence[str], since: int) -> list[FeedRemoval]:
    return await fetch_all(
        conn, FeedRemoval,
        f"""SELECT kind, key, park_id FROM feed_removals
            WHERE {_SINCE} AND (park_id = '' OR park_id = ANY(%(parks)s)) ORDER BY feed_xid""",
        {"parks": list(parks), "since": since},
    )


# --- store and forward -----------------------------------------------------------------------


async def lock_cursor(conn: Connection, device_id: str, journal_id: str, edge_id: str) -> int:
    """The last sequence of ``journal_id`` taken from ``device_id`` (0 for none), locked until the transaction ends."""
    await conn.execute(
        """INSERT INTO forward_cursors (device_id, journal_id, edge_id, sequence) VALUES (%s, %s, %s, 0)
           ON CONFLICT DO NOTHING""",
        (device_id, journal_id, edge_id),
    )
    cur = await conn.execute("SELECT sequence FROM forward_cursors WHERE device_id = %s AND journal_id = %s FOR UPDATE",
                             (device_id, journal_id))
    row = await cur.fetchone()
    assert row is not None
    return int(row["sequence"])


@asynccontextmanager
async def savepoint(conn: Connection) -> AsyncIterator[None]:
    """A part of the transaction that can fail alone: the database's refusals come out as domain errors."""
    async with connection_errors_to_domain(), conn.transaction():
        yield


async def record_rejection(conn: Connection, device_id: str, journal_id: str, sequence: int, edge_id: str,
                           reason: str, message: str, record: bytes) -> None:
    await conn.execute(
        """INSERT INTO forward_rejections (device_id, journal_id, sequence, edge_id, reason, message, record)
           VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        (device_id, journal_id, sequence, edge_id, reason, message, record),
    )


async def rejection_of(conn: Connection, device_id: str, journal_id: str, sequence: int) -> str | None:
    cur = await conn.execute(
        "SELECT reason FROM forward_rejections WHERE device_id = %s AND journal_id = %s AND sequence = %s",
        (device_id, journal_id, sequence))
    row = await cur.fetchone()
    return str(row["reason"]) if row else None


async def serials_taken(conn: Connection, serials: Sequence[int]) -> list[int]:
    cur = await conn.execute("SELECT serial FROM tickets WHERE serial = ANY(%s::bigint[])", (list(serials),))
    return [int(r["serial"]) for r in await cur.fetchall()]


async def advance_cursor(conn: Connection, device_id: str, journal_id: str, edge_id: str, sequence: int) -> None:
    await conn.execute(
        """UPDATE forward_cursors SET sequence = %s, edge_id = %s, updated_at = now()
           WHERE device_id = %s AND journal_id = %s""",
        (sequence, edge_id, device_id, journal_id),
    )


async def mark_offline(conn: Connection, device_id: str, request_id: str, edge_id: str, site: str) -> None:
    await conn.execute(
        "UPDATE validations SET offline_edge = %s, site = %s WHERE device_id = %s AND request_id = %s",
        (edge_id, site, device_id, request_id),
    )


async def first_admission(conn: Connection, ticket_id: str) -> EarlierAdmission | None:
    """The earliest admission that counted a use of the ticket and still stands."""
    return await fetch_one(
        conn, EarlierAdmission,
        """SELECT coalesce(nullif(v.site, ''), d.site, '') AS site, v.device_id, v.at
           FROM validations v LEFT JOIN devices d ON d.id = v.device_id
           WHERE v.ticket_id = %s AND v.allow AND v.direction = 'in' AND v.counted AND v.annulled_at IS NULL
           ORDER BY v.at LIMIT 1""",
        (ticket_id,),
    )


async def record_conflict(conn: Connection, ticket_id: str, park_id: str, first: EarlierAdmission, second_site: str,
                          second_device: str, second_at: float) -> None:
    await conn.execute(
        """INSERT INTO site_conflicts (ticket_id, park_id, first_site, first_device_id, first_at, second_site,
                                       second_device_id, second_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s))""",
        (ticket_id, park_id, first.site, first.device_id, first.at, second_site, second_device, second_at),
    )


async def conflict_recorded(conn: Connection, ticket_id: str, device_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM site_conflicts WHERE ticket_id = %s AND second_device_id = %s",
                             (ticket_id, device_id))
    return await cur.fetchone() is not None


async def list_conflicts(conn: Connection, park_id: str, since: datetime | None) -> list[ConflictRow]:
    return await fetch_all(
        conn, ConflictRow,
        """SELECT ticket_id::text AS ticket_id, park_id, first_site, first_device_id, first_at, second_site,
                  second_device_id, second_at, recorded_at
           FROM site_conflicts
           WHERE (%(park)s = '' OR park_id = %(park)s) AND (%(since)s::timestamptz IS NULL OR recorded_at >= %(since)s)
           ORDER BY recorded_at, id""",
        {"park": park_id, "since": since},
    )


async def count_conflicts(conn: Connection) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM site_conflicts")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


# --- offline sales ----------------------------------------------------------------------------


async def adopt_offline_order(conn: Connection, order_id: str, edge_order_id: str, sold_at: datetime,
                              site: str) -> str:
    """Give a just-inserted order the edge's id and the time it was sold (nothing refers to it yet)."""
    cur = await conn.execute(
        "UPDATE orders SET id = coalesce(%s::uuid, id), created_at = %s, site = %s WHERE id = %s RETURNING id::text",
        (edge_order_id or None, sold_at, site, order_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row["id"])


async def adopt_ticket_ids(conn: Connection, serials: Sequence[int], ids: Sequence[str]) -> None:
    """Tickets keep the ids the edge printed (before any card binding refers to them)."""
    await conn.execute(
        """UPDATE tickets t SET id = x.id FROM unnest(%s::bigint[], %s::uuid[]) AS x(serial, id)
           WHERE t.serial = x.serial AND x.id IS NOT NULL""",
        (list(serials), list(ids)),
    )


async def user_by_name(conn: Connection, username: str) -> str | None:
    cur = await conn.execute("SELECT id::text AS id FROM users WHERE username = %s", (username,))
    row = await cur.fetchone()
    return str(row["id"]) if row else None
