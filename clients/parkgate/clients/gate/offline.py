"""What a gate keeps on its own disk: the servers' public keys, and admissions made while offline.

* ``keys.json`` -- the keyring (public keys only, docs/ticket-code.md) with
  the park number and attraction slot from the last welcome, so a gate that
  boots while no server answers can still check signatures in fast mode.
* ``offline.jsonl`` -- one JSON line per admission made on a locally valid
  signature while no server answered (S24, S29): the request id, the code,
  when, and whether the person passed. When a server answers again the agent
  forwards each one as an ordinary validation with the same request id (the
  server consumes the entry once; a retry returns its first decision) and
  drops it from the file. Nothing here is trusted for access: the file is a
  to-do list for the server.

Each write replaces the file atomically (write a temporary file, fsync,
rename), so a power cut leaves the old or the new list, never half of one.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from parkgate import native

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedKeys:
    keyring: native.Keyring
    park_number: int
    attraction_slot: int


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
            "attraction_slot": keys.attraction_slot, "saved_at": time.time()}))

    def load_keys(self) -> CachedKeys | None:
        if self.folder is None:
            return None
        path = self.folder / "keys.json"
        try:
            data = orjson.loads(path.read_bytes())
            return CachedKeys(native.Keyring.from_hex(data["keyring"]), int(data["park_number"]),
                              int(data["attraction_slot"]))
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
