"""A small, self-contained site picture written into an edge's store: for the benchmark and the store's tests.

It writes what a feed would carry (a park with its products' terms, a verify
key, a gate device) through the feed's own code path (:func:`.feed.apply_batch`),
and returns the signing key so callers can issue codes the edge accepts.
"""

from __future__ import annotations

import time

from parkgate import native
from parkgate.v1 import common_pb2, gate_pb2, site_pb2

from .feed import apply_batch
from .store import SiteStore


def feed_sample_site(store: SiteStore, *, park_id: str = "land", park_number: int = 7, key_id: int = 9,
                     gate_id: str = "gate-1", secret_hash: str = "") -> native.SigningKey:
    key = native.SigningKey.generate(key_id)
    park = site_pb2.SitePark(park_id=park_id, park_number=park_number, time_zone="UTC", language="en",
                             products=[gate_pb2.AdmissionTerms(product_number=1, entries_total=1)])
    device = site_pb2.GateDevice(device_id=gate_id, secret_hash=secret_hash, park_id=park_id, kind="gate",
                                 direction=common_pb2.IN)
    apply_batch(store, site_pb2.FeedBatch(version=1, full_resync=True, caught_up=True, items=[
        site_pb2.FeedItem(park=park), site_pb2.FeedItem(key=gate_pb2.VerifyKey(key_id=key_id,
                                                                                public_key=key.public_key)),
        site_pb2.FeedItem(device=device)]))
    return key


def sample_code(key: native.SigningKey, serial: int, *, park_number: int = 7, product: int = 1) -> str:
    now = int(time.time())
    return native.issue(key, serial=serial, product_id=product, park_id=park_number, valid_from=now - 3600,
                        valid_until=now + 86400)
