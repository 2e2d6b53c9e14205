"""The edge's durable local store: SQLite in WAL mode with ``synchronous=FULL``.

Why SQLite: one file, transactions, indexes and crash recovery from the
standard library, on any small box. Why WAL + synchronous=FULL: a commit
returns only after the write-ahead log is fsync'd, so a decision the edge
answered (the gate opened on it) survives a kill -9 or a power cut; WAL lets
the forwarder and the feed read while a decision commits, and makes a commit
one sequential append plus one fdatasync (about 0.2 ms on these machines),
which keeps an offline decision within its latency budget. ``NORMAL`` would
be faster and can lose the last transactions at a power cut: not for gates.

Everything is used from the edge's one event-loop thread (the store's calls
are short; the loop never waits on the network while holding a transaction).

Tables (one module owns all the SQL):

* feed state: ``parks keys tickets cards products prices holidays operators devices`` and
  ``meta.feed_version`` -- what the cluster's feed said, replaced by a full resync;
* ``park_states`` -- each park's live state (emergency, entry paused) as last heard: not a feed
  table, so neither a full resync nor a cluster away makes the edge forget an emergency;
* ``uses`` -- tickets' uses as this edge knows them from its own decisions (online and offline),
  merged with the feed's at decision time so an admission is never forgotten before the feed echoes it;
* ``decisions`` -- every answer given to a gate, by (device, request id): a retried request gets it again;
* ``outbox`` + ``sequences`` -- the forward queue: records per device with gap-free sequences,
  counted within ``meta.journal_id`` (a random id made with the store);
* ``rejected`` -- records the cluster refused for good (kept for people, never dropped silently);
* ``sales`` -- orders sold here (offline) with their session, for idempotency and shift totals;
* ``sessions`` -- window sessions the edge knows (opened through it online, or offline), by the
  SHA-256 of their token: a copied site.db gives no usable session token;
* ``serials`` + ``meta.site_key`` -- the provisioned signing key and serial ranges;
* ``unsettled`` -- tickets this edge admitted alone whose record the cluster has not acknowledged yet:
  until it has, the cluster does not know that use, so the edge decides such a ticket itself; their
  ``moved`` (+ in, - out) is this site's flow since the occupancy the feed last reported; a passage
  report of a person who did not pass is one too, with the uses it ``returned`` to the ticket;
* ``admitted`` -- every admission the edge passed on to a gate (online or its own), with what it moved,
  so a gate's report that the person did not pass can give it back;
* ``charges`` -- stored-value charges this edge made alone, counted against the card's fed balance and
  the offline limit until a feed batch past the transaction that took them at the cluster arrives.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parks (park_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS park_states (park_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key_id INTEGER PRIMARY KEY, public_key BLOB NOT NULL, state INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (ticket_id TEXT PRIMARY KEY, serial INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS tickets_serial ON tickets (serial);
CREATE TABLE IF NOT EXISTS cards (card_uid TEXT PRIMARY KEY, ticket_id TEXT NOT NULL, blocked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS products (product_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS prices (product_id TEXT, day_type INTEGER, peak_name TEXT, body BLOB NOT NULL,
                                   PRIMARY KEY (product_id, day_type, peak_name));
CREATE TABLE IF NOT EXISTS holidays (park_id TEXT, day TEXT, body BLOB NOT NULL, PRIMARY KEY (park_id, day));
CREATE TABLE IF NOT EXISTS operators (user_name TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS uses (serial INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (device_id TEXT, request_id TEXT, result BLOB NOT NULL, offline INTEGER,
                                      PRIMARY KEY (device_id, request_id));
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
                                   sequence INTEGER NOT NULL, body BLOB NOT NULL, UNIQUE (device_id, sequence));
CREATE TABLE IF NOT EXISTS sequences (device_id TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (device_id TEXT, sequence INTEGER, reason TEXT, body BLOB,
                                     at REAL, PRIMARY KEY (device_id, sequence));
CREATE TABLE IF NOT EXISTS sales (device_id TEXT, request_id TEXT, order_id TEXT NOT NULL, operator TEXT,
                                  session TEXT, body BLOB NOT NULL, sold_at REAL, sequence INTEGER NOT NULL,
                                  PRIMARY KEY (device_id, request_id));
CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, user_name TEXT NOT NULL, device_id TEXT,
                                     permissions TEXT, display_name TEXT, started_at REAL, expires_at REAL,
                                     offline INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS serials (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS charges (device_id TEXT, sequence INTEGER, ticket_id TEXT NOT NULL,
                                    amount INTEGER NOT NULL, at REAL, taken_in INTEGER,
                                    PRIMARY KEY (device_id, sequence));
CREATE INDEX IF NOT EXISTS charges_ticket ON charges (ticket_id);
CREATE TABLE IF NOT EXISTS unsettled (device_id TEXT, sequence INTEGER, ticket_key TEXT NOT NULL,
                                      park_id TEXT NOT NULL, moved INTEGER NOT NULL,
                                      serial INTEGER NOT NULL DEFAULT 0, returned INTEGER NOT NULL DEFAULT 0,
                                      PRIMARY KEY (device_id, sequence));
CREATE INDEX IF NOT EXISTS unsettled_ticket ON unsettled (ticket_key);
CREATE INDEX IF NOT EXISTS unsettled_serial ON unsettled (serial) WHERE returned > 0;
CREATE TABLE IF NOT EXISTS admitted (device_id TEXT, request_id TEXT, ticket_key TEXT NOT NULL,
                                     serial INTEGER NOT NULL, park_id TEXT NOT NULL, moved INTEGER NOT NULL,
                                     counted INTEGER NOT NULL, given_back INTEGER NOT NULL DEFAULT 0,
                                     PRIMARY KEY (device_id, request_id));
"""

#: Tables that hold the feed's picture; a full resync empties them.
FEED_TABLES = ("parks", "keys", "tickets", "cards", "products", "prices", "holidays", "operators", "devices")


def _token_key(token: str) -> str:
    """What the store keeps of a session token (and returns as ``Session.token``): its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


class StoreError(Exception):
    """The local store cannot be used (disk full, damaged file): the edge must stop, not guess."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record of the forward queue."""

    row_id: int
    device_id: str
    sequence: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Admitted:
    """An admission the edge passed on to a gate, as a passage report needs it."""

    ticket_key: str
    serial: int
    park_id: str
    moved: int
    counted: int
    given_back: bool


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    user_name: str
    device_id: str
    permissions: tuple[str, ...]
    display_name: str
    started_at: float
    expires_at: float
    offline: bool


class SiteStore:
    """The one connection to ``site.db``; every method is one short statement or one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=OFF")
            self.db.executescript(SCHEMA)
            # Made once, when the store is created: the cluster counts this store's sequences
            # within it, so a replaced box (a new store, sequences from 1 again) is not a replay.
            self.db.execute("INSERT INTO meta (key, value) VALUES ('journal_id', ?) ON CONFLICT (key) DO NOTHING",
                            (secrets.token_hex(16),))
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from None
        self.path = path
        self.journal_id = self.get_meta("journal_id")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable change: committed (and fsync'd) when the block ends, rolled back on error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    @staticmethod
    def put_meta(tx: sqlite3.Connection, key: str, value: str) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   (key, value))

    # --- feed ------------------------------------------------------------------------------

    @staticmethod
    def clear_feed(tx: sqlite3.Connection) -> None:
        for table in FEED_TABLES:
            tx.execute(f"DELETE FROM {table}")

    @staticmethod
    def upsert(tx: sqlite3.Connection, table: str, key: tuple[object, ...], body: bytes,
               extra: dict[str, object] | None = None) -> None:
        """Insert or replace one feed row; ``key`` fills the primary key columns in table order."""
        columns = {"parks": ("park_id",), "park_states": ("park_id",), "tickets": ("ticket_id", "serial"),
                   "products": ("product_id",),
                   "prices": ("product_id", "day_type", "peak_name"), "holidays": ("park_id", "day"),
                   "operators": ("user_name",), "devices": ("device_id",)}[table]
        names = ", ".join((*columns, "body"))
        marks = ", ".join("?" * (len(columns) + 1))
        tx.execute(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", (*key, body))

    @staticmethod
    def delete(tx: sqlite3.Connection, table: str, column: str, value: object) -> None:
        """Forget one feed row (a released card binding, a removed holiday)."""
        tx.execute(f"DELETE FROM {table} WHERE {column} = ?", (value,))

    @staticmethod
    def put_key(tx: sqlite3.Connection, key_id: int, public_key: bytes, state: int) -> None:
        old = tx.execute("SELECT state FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        if old is not None and old[0] == 2:
            state = 2  # a revoked key never comes back
        tx.execute("INSERT OR REPLACE INTO keys (key_id, public_key, state) VALUES (?, ?, ?)",
                   (key_id, public_key, state))

    @staticmethod
    def revoke_key(tx: sqlite3.Connection, key_id: int) -> None:
        tx.execute("UPDATE keys SET state = 2 WHERE key_id = ?", (key_id,))

    @staticmethod
    def put_card(tx: sqlite3.Connection, card_uid: str, ticket_id: str, blocked: bool) -> None:
        tx.execute("INSERT OR REPLACE INTO cards (card_uid, ticket_id, blocked) VALUES (?, ?, ?)",
                   (card_uid, ticket_id, int(blocked)))

    def keys(self) -> list[tuple[int, bytes, int]]:
        return [(int(k), bytes(p), int(s)) for k, p, s in self.db.execute("SELECT key_id, public_key, state FROM keys")]

    def bodies(self, table: str) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute(f"SELECT body FROM {table}")]

    def body(self, table: str, column: str, value: object) -> bytes | None:
        row = self.db.execute(f"SELECT body FROM {table} WHERE {column} = ?", (value,)).fetchone()
        return None if row is None else bytes(row[0])

    def card(self, card_uid: str) -> tuple[str, bool] | None:
        row = self.db.execute("SELECT ticket_id, blocked FROM cards WHERE card_uid = ?", (card_uid,)).fetchone()
        return None if row is None else (str(row[0]), bool(row[1]))

    def price_bodies(self, product_id: str) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute("SELECT body FROM prices WHERE product_id = ?", (product_id,))]

    # --- uses and answers -------------------------------------------------------------------

    def use(self, serial: int) -> bytes | None:
        return self.body("uses", "serial", serial)

    @staticmethod
    def put_use(tx: sqlite3.Connection, serial: int, body: bytes) -> None:
        tx.execute("INSERT OR REPLACE INTO uses (serial, body) VALUES (?, ?)", (serial, body))

    def answer(self, device_id: str, request_id: str) -> bytes | None:
        row = self.db.execute("SELECT result FROM decisions WHERE device_id = ? AND request_id = ?",
                              (device_id, request_id)).fetchone()
        return None if row is None else bytes(row[0])

    @staticmethod
    def put_answer(tx: sqlite3.Connection, device_id: str, request_id: str, result: bytes, offline: bool) -> None:
        tx.execute("INSERT OR IGNORE INTO decisions (device_id, request_id, result, offline) VALUES (?, ?, ?, ?)",
                   (device_id, request_id, result, int(offline)))

    @staticmethod
    def put_unsettled(tx: sqlite3.Connection, device_id: str, sequence: int, ticket_key: str, park_id: str,
                      moved: int, serial: int = 0, returned: int = 0) -> None:
        tx.execute("INSERT OR REPLACE INTO unsettled (device_id, sequence, ticket_key, park_id, moved, serial, "
                   "returned) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (device_id, sequence, ticket_key, park_id, moved, serial, returned))

    def returned_uses(self, serial: int) -> tuple[int, bool]:
        """(uses given back to ticket ``serial`` that the cluster has not heard of yet, whether its holder left)."""
        row = self.db.execute("SELECT coalesce(sum(returned), 0), coalesce(max(moved < 0), 0) FROM unsettled "
                              "WHERE serial = ? AND returned > 0", (serial,)).fetchone()
        return int(row[0]), bool(row[1])

    @staticmethod
    def put_admitted(tx: sqlite3.Connection, device_id: str, request_id: str, ticket_key: str, serial: int,
                     park_id: str, moved: int, counted: bool) -> None:
        tx.execute("INSERT OR IGNORE INTO admitted (device_id, request_id, ticket_key, serial, park_id, moved, "
                   "counted) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (device_id, request_id, ticket_key, serial, park_id, moved, int(counted)))

    def admitted(self, device_id: str, request_id: str) -> Admitted | None:
        row = self.db.execute("SELECT ticket_key, serial, park_id, moved, counted, given_back FROM admitted "
                              "WHERE device_id = ? AND request_id = ?", (device_id, request_id)).fetchone()
        return None if row is None else Admitted(str(row[0]), int(row[1]), str(row[2]), int(row[3]), int(row[4]),
                                                 bool(row[5]))

    @staticmethod
    def mark_given_back(tx: sqlite3.Connection, device_id: str, request_id: str) -> None:
        tx.execute("UPDATE admitted SET given_back = 1 WHERE device_id = ? AND request_id = ?", (device_id, request_id))

    def unsettled_moves(self, park_id: str) -> int:
        """People this edge let into ``park_id`` (less those it let out) that the cluster has not counted yet."""
        row = self.db.execute("SELECT coalesce(sum(moved), 0) FROM unsettled WHERE park_id = ?", (park_id,)).fetchone()
        return int(row[0])

    def unsettled(self, ticket_key: str) -> bool:
        """Did this edge admit the ticket alone in a record the cluster has not acknowledged yet?"""
        return self.db.execute("SELECT 1 FROM unsettled WHERE ticket_key = ? LIMIT 1", (ticket_key,)).fetchone() \
            is not None

    # --- forward queue ---------------------------------------------------------------------------

    @staticmethod
    def enqueue(tx: sqlite3.Connection, device_id: str, body_for: object) -> int:
        """Append a record for ``device_id`` with the next sequence; ``body_for(sequence) -> bytes``."""
        row = tx.execute("SELECT last FROM sequences WHERE device_id = ?", (device_id,)).fetchone()
        sequence = 1 if row is None else int(row[0]) + 1
        tx.execute("INSERT OR REPLACE INTO sequences (device_id, last) VALUES (?, ?)", (device_id, sequence))
        tx.execute("INSERT INTO outbox (device_id, sequence, body) VALUES (?, ?, ?)",
                   (device_id, sequence, body_for(sequence)))  # type: ignore[operator]
        return sequence

    def pending(self, limit: int) -> list[Outgoing]:
        """The oldest records, in the order they were made (so in order per device)."""
        return [Outgoing(int(i), str(d), int(s), bytes(b)) for i, d, s, b in self.db.execute(
            "SELECT id, device_id, sequence, body FROM outbox ORDER BY id LIMIT ?", (limit,))]

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def checkpoint(self) -> None:
        """Fold the WAL into site.db and truncate it: before a power-loss stop, one file holds everything."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def acknowledge(self, done: Iterable[tuple[str, int]], refused: Iterable[tuple[str, int, str]],
                    taken_in: Iterable[tuple[str, int, int]] = ()) -> None:
        """Drop acknowledged records; move refused ones to ``rejected`` with their reason; one transaction.

        ``taken_in`` (device, sequence, cluster transaction) marks the records' charges as taken: they stop
        counting once the feed passes that transaction (:meth:`settle_charges`)."""
        with self.transaction() as tx:
            tx.executemany("UPDATE charges SET taken_in = ? WHERE device_id = ? AND sequence = ?",
                           [(x, d, s) for d, s, x in taken_in])
            for device_id, sequence, reason in refused:
                tx.execute("INSERT OR REPLACE INTO rejected (device_id, sequence, reason, body, at) "
                           "SELECT device_id, sequence, ?, body, ? FROM outbox WHERE device_id = ? AND sequence = ?",
                           (reason, time.time(), device_id, sequence))
                tx.execute("DELETE FROM outbox WHERE device_id = ? AND sequence = ?", (device_id, sequence))
                tx.execute("DELETE FROM unsettled WHERE device_id = ? AND sequence = ?", (device_id, sequence))
            tx.executemany("DELETE FROM outbox WHERE device_id = ? AND sequence = ?", list(done))
            tx.executemany("DELETE FROM unsettled WHERE device_id = ? AND sequence = ?", list(done))

    def rejected_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM rejected").fetchone()[0])

    # --- stored value offline ----------------------------------------------------------------------

    def charged_since_fed(self, ticket_id: str) -> int:
        """What this edge charged the card alone that the feed's balance does not show yet."""
        row = self.db.execute("SELECT coalesce(sum(amount), 0) FROM charges WHERE ticket_id = ?",
                              (ticket_id,)).fetchone()
        return int(row[0])

    @staticmethod
    def put_charge(tx: sqlite3.Connection, device_id: str, sequence: int, ticket_id: str, amount: int,
                   at: float) -> None:
        tx.execute("INSERT INTO charges (device_id, sequence, ticket_id, amount, at) VALUES (?, ?, ?, ?, ?)",
                   (device_id, sequence, ticket_id, amount, at))

    @staticmethod
    def settle_charges(tx: sqlite3.Connection, feed_version: int) -> None:
        """A feed batch at ``feed_version`` sees every cluster transaction below it: those charges are in
        the balances it carries (a charge the cluster refused stays counted: the safe side)."""
        tx.execute("DELETE FROM charges WHERE taken_in IS NOT NULL AND taken_in < ?", (feed_version,))

    # --- sales and sessions ----------------------------------------------------------------------

    def sale(self, device_id: str, request_id: str) -> bytes | None:
        row = self.db.execute("SELECT body FROM sales WHERE device_id = ? AND request_id = ?",
                              (device_id, request_id)).fetchone()
        return None if row is None else bytes(row[0])

    @staticmethod
    def put_sale(tx: sqlite3.Connection, device_id: str, request_id: str, order_id: str, operator: str,
                 session: str, body: bytes, sold_at: float, sequence: int) -> None:
        tx.execute("INSERT INTO sales (device_id, request_id, order_id, operator, session, body, sold_at, sequence) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (device_id, request_id, order_id, operator, session, body, sold_at, sequence))

    def operator_sales(self, operator: str, since: float, *, unforwarded_only: bool) -> list[bytes]:
        """Orders this operator sold here since ``since``; only those still in the forward queue if asked."""
        query = "SELECT s.body FROM sales s WHERE s.operator = ? AND s.sold_at >= ?"
        if unforwarded_only:
            query += (" AND EXISTS (SELECT 1 FROM outbox o WHERE o.device_id = s.device_id"
                      " AND o.sequence = s.sequence)")
        return [bytes(r[0]) for r in self.db.execute(query + " ORDER BY s.sold_at", (operator, since))]

    def put_session(self, s: Session) -> None:
        with self.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (_token_key(s.token), s.user_name, s.device_id, "\n".join(s.permissions), s.display_name, s.started_at,
                        s.expires_at, int(s.offline)))

    def session(self, token: str) -> Session | None:
        row = self.db.execute("SELECT * FROM sessions WHERE token = ?", (_token_key(token),)).fetchone()
        if row is None:
            return None
        return Session(str(row[0]), str(row[1]), str(row[2] or ""), tuple(p for p in str(row[3] or "").split("\n") if p),
                       str(row[4] or ""), float(row[5]), float(row[6]), bool(row[7]))

    def drop_session(self, token: str) -> None:
        with self.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE token = ?", (_token_key(token),))

    # --- signing key and serials -------------------------------------------------------------------

    @staticmethod
    def add_serials(tx: sqlite3.Connection, first: int, last: int) -> None:
        tx.execute("INSERT OR IGNORE INTO serials (first, last, next) VALUES (?, ?, ?)", (first, last, first))

    @staticmethod
    def take_serials(tx: sqlite3.Connection, count: int) -> list[int] | None:
        """``count`` unused serials from the provisioned ranges (in the caller's transaction), or None."""
        out: list[int] = []
        for first, last, nxt in tx.execute("SELECT first, last, next FROM serials WHERE next <= last ORDER BY first"
                                           ).fetchall():
            take = min(count - len(out), last - nxt + 1)
            out.extend(range(nxt, nxt + take))
            tx.execute("UPDATE serials SET next = ? WHERE first = ?", (nxt + take, first))
            if len(out) == count:
                return out
        return None

    def serials_left(self) -> tuple[int, int]:
        """(unused, provisioned in total)."""
        left, total = self.db.execute(
            "SELECT coalesce(sum(last - next + 1), 0), coalesce(sum(last - first + 1), 0) FROM serials").fetchone()
        return int(left), int(total)
