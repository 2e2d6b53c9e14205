"""What a gate keeps on its own disk, and how it decides alone with the one decision engine.

* ``keys.json`` -- the keyring (public keys only, docs/ticket-code.md) with
  what the last welcome said of the gate's place (park, attraction, zone, the
  attraction slots codes carry) and the counting terms of the park's
  products, so a gate that boots while no server answers can still decide.
* ``uses.json`` -- the uses of tickets this gate has seen admitted (by serial),
  so an offline gate refuses a single-use ticket it already let in.
* ``offline.jsonl`` -- one JSON line per admission made on a locally valid
  signature while no server answered (S24, S29): the request id, the code,
  when, and whether the person passed. When a server answers again the agent
  forwards each one as an ordinary validation with the same request id (the
  server consumes the entry once; a retry returns its first decision) and
  drops it from the file. Nothing here is trusted for access: the file is a
  to-do list for the server.

Each write replaces the file atomically (write a temporary file, fsync,
rename), so a power cut leaves the old or the new list, never half of one.

Stored value, blocked cards and per-attraction counts of IC cards (issue 15) live at the centre
only: this path decides signed codes and knows no card balances, so a card is not charged offline.
Charging within a configured limit at a site edge and reconciling later is the sites work (S29).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from parkgate import native
from parkgate.common.reason import Reason
from parkgate.rules import (
    AdmissionTerms,
    Direction,
    GatePlace,
    LocalTime,
    ParkState,
    TicketState,
    Verdict,
    decide,
    ticket_from_code,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedKeys:
    """What the gate knows from its last welcome: keys, its place, the park's products' counting terms."""

    keyring: native.Keyring
    park_number: int
    attraction_slot: int
    park_id: str = ""
    attraction_id: str = ""
    time_zone: str = "UTC"
    attraction_slots: dict[int, str] = field(default_factory=dict)
    products: dict[int, AdmissionTerms] = field(default_factory=dict)
    # Tickets whose code leaked and was reissued: their old code is refused here (CODE_REVOKED).
    revoked_serials: frozenset[int] = frozenset()


def keyring_from(keys: Sequence[tuple[int, bytes, bool]], revoked: Sequence[int],
                 known: native.Keyring | None = None) -> native.Keyring:
    """The keyring a server announced (welcome or UPDATE_KEYS): usable keys, plus the revoked ones the gate knew.

    A revoked key stays in the ring as REVOKED rather than being dropped, so
    its codes are refused as REVOKED_KEY (not UNKNOWN_KEY) from the moment the
    gate hears of it, online or not.
    """
    keyring = native.Keyring()
    for key_id, public_key, retired in keys:
        keyring.add(key_id, public_key, native.KeyState.RETIRED if retired else native.KeyState.ACTIVE)
    for key_id in revoked:
        if known is not None and key_id in known and key_id not in keyring:
            keyring.add(key_id, known.public_key(key_id), native.KeyState.REVOKED)
    return keyring


@dataclass(slots=True)
class OfflineAdmission:
    request_id: str
    code: str
    scanned_at: float
    persons: int
    passed: bool | None = None  # None: the board has not said yet


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class GateDisk:
    """The gate's state folder; ``None`` folder = keep everything in memory only."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.admissions: list[OfflineAdmission] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._load_admissions()

    # --- keys ------------------------------------------------------------------------------

    def save_keys(self, keys: CachedKeys) -> None:
        if self.folder is None:
            return
        _write_atomically(self.folder / "keys.json", orjson.dumps({
            "keyring": keys.keyring.public().hex(), "park_number": keys.park_number,
            "attraction_slot": keys.attraction_slot, "park_id": keys.park_id, "attraction_id": keys.attraction_id,
            "time_zone": keys.time_zone, "attraction_slots": {str(k): v for k, v in keys.attraction_slots.items()},
            "products": {str(k): asdict(v) for k, v in keys.products.items()},
            "revoked_serials": sorted(keys.revoked_serials), "saved_at": time.time()}))

    def load_keys(self) -> CachedKeys | None:
        if self.folder is None:
            return None
        path = self.folder / "keys.json"
        try:
            data = orjson.loads(path.read_bytes())
            return CachedKeys(
                native.Keyring.from_hex(data["keyring"]), int(data["park_number"]), int(data["attraction_slot"]),
                str(data.get("park_id", "")), str(data.get("attraction_id", "")), str(data.get("time_zone", "UTC")),
                {int(k): str(v) for k, v in data.get("attraction_slots", {}).items()},
                {int(k): AdmissionTerms(**v) for k, v in data.get("products", {}).items()},
                frozenset(int(s) for s in data.get("revoked_serials", [])))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the key cache %s: %s", path, exc)
            return None

    # --- offline admissions -------------------------------------------------------------------

    def add(self, admission: OfflineAdmission) -> None:
        self.admissions.append(admission)
        self._save()

    def set_passed(self, request_id: str, passed: bool) -> None:
        for admission in self.admissions:
            if admission.request_id == request_id:
                admission.passed = passed
                self._save()
                return

    def flush(self) -> None:
        """Write the journal to disk now (fsync), e.g. when the gate starts deciding on battery."""
        if self.folder is not None:
            self._save()

    def remove(self, request_id: str) -> None:
        self.admissions = [a for a in self.admissions if a.request_id != request_id]
        self._save()

    def _save(self) -> None:
        if self.folder is None:
            return
        _write_atomically(self.folder / "offline.jsonl",
                          b"".join(orjson.dumps(asdict(a)) + b"\n" for a in self.admissions))

    def _load_admissions(self) -> None:
        assert self.folder is not None
        path = self.folder / "offline.jsonl"
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                self.admissions.append(OfflineAdmission(**orjson.loads(line)))
            except (ValueError, TypeError) as exc:
                log.warning("%s: skipped a damaged line (%s)", path, exc)
        if self.admissions:
            log.info("%d offline admissions from before the restart wait to be forwarded", len(self.admissions))


# --- deciding alone -------------------------------------------------------------------------------

def _ticket_to_json(t: TicketState) -> dict:
    return {"serial": t.serial, "entries_used": t.entries_used, "entries_today": t.entries_today,
            "entries_day": t.entries_day.isoformat() if t.entries_day else None, "first_used_at": t.first_used_at,
            "inside": t.inside, "last_entry_at": t.last_entry_at, "last_exit_at": t.last_exit_at}


@dataclass(frozen=True, slots=True)
class LocalDecision:
    """The engine's answer on this gate, with what it needs to act on it."""

    verdict: Verdict
    serial: int
    code: str
    direction: Direction

    @property
    def ok(self) -> bool:
        return self.verdict.allow

    @property
    def reason(self) -> str:
        return self.verdict.reason.value

    @property
    def persons(self) -> int:
        return self.verdict.ticket.persons if self.verdict.ticket is not None else 1


class OfflineDecider:
    """The gate's offline path: the one decision engine over the signed code, the cached terms and the
    uses this gate remembers (``uses.json``, written durably before the gate opens).

    What it cannot know offline, it says: other gates' admissions (a site
    edge knows them), refunds after the last contact, the park's occupancy
    (entry pauses only as the last state the server sent).
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.uses: dict[int, dict] = {}
        if folder is not None:
            try:
                data = orjson.loads((folder / "uses.json").read_bytes())
                self.uses = {int(k): v for k, v in data.items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                log.warning("ignoring %s: %s", folder / "uses.json", exc)

    def decide(self, code: str, direction: Direction, now: float, keys: CachedKeys | None) -> LocalDecision | Reason:
        """The decision for ``code`` at ``now``, or the reason none can be made here (no keys, forged...)."""
        if keys is None or not keys.park_number:
            return Reason.NO_OFFLINE_TERMS
        result = native.authenticate_batch([code.strip()], keys.keyring)[0]
        if not result.ok or result.ticket is None:
            return result.reason
        payload = result.ticket
        if payload.serial in keys.revoked_serials:
            return Reason.CODE_REVOKED
        if payload.park_id != keys.park_number:
            return Reason.NOT_VALID_FOR_PARK
        ticket = self._ticket(payload, keys)
        place = GatePlace(device_id="", park_id=keys.park_id or str(keys.park_number), park_number=keys.park_number,
                          time_zone=keys.time_zone, attraction_id=keys.attraction_id,
                          attraction_slot=keys.attraction_slot, direction=direction)
        clock = LocalTime(now, ZoneInfo(keys.time_zone))
        verdict = decide(ticket, place, direction, ParkState(place.park_id), clock)
        return LocalDecision(verdict, payload.serial, code, direction)

    def _ticket(self, payload: native.Ticket, keys: CachedKeys) -> TicketState:
        terms = keys.products.get(payload.product_id, AdmissionTerms(entries_total=1))  # unknown product: once
        slots = payload.attraction_slots
        ticket = ticket_from_code(payload, terms, keys.park_id or str(keys.park_number),
                                  frozenset(keys.attraction_slots[s] for s in slots if s in keys.attraction_slots),
                                  payload.all_attractions)
        seen = self.uses.get(payload.serial)
        if seen is None:
            return ticket
        return replace(ticket, entries_used=seen["entries_used"], entries_today=seen["entries_today"],
                       entries_day=date.fromisoformat(seen["entries_day"]) if seen["entries_day"] else None,
                       first_used_at=seen["first_used_at"], inside=seen["inside"],
                       last_entry_at=seen["last_entry_at"], last_exit_at=seen["last_exit_at"])

    def remember(self, decision: LocalDecision) -> None:
        """Keep what an admission (or exit) changed of its ticket, durably, before the gate opens."""
        ticket = decision.verdict.ticket
        if not decision.verdict.allow or ticket is None:
            return
        self.uses[decision.serial] = _ticket_to_json(ticket)
        if self.folder is not None:
            _write_atomically(self.folder / "uses.json",
                              orjson.dumps({str(k): v for k, v in self.uses.items()}))
