"""What the Locust load test needs on a running parkgate (the demo park of ``parkgate up --demo``), prepared once.

    python -m loadtests.load_setup --server 127.0.0.1:50051 --admin-password PW [--dsn DSN] --out state.json

Everything goes through the contract as an admin and a window would, except
one thing: with ``--dsn`` (the database of the system under test) it reads
the installation's signing key to mint *expired* codes for real tickets, the
one kind of scan no window can sell. The result is a JSON file the locustfile
reads in every process (master, workers): gate secrets, window logins, and
pools of codes by kind.

What it makes, in the demo's waterpark (S32, "peak morning"):

* the park's capacity raised far above the run (a load test measures the
  gates, not the cap) and its entrance gates registered (``load-gate-NNN``);
* sales windows ``load-window-N`` and their operators ``load-lead-N`` with a
  role that sells and refunds (``load-window-lead``), a manager ``load-manager``;
* pools: fresh day tickets (one entry each: the morning crowd), season passes
  (unlimited: always admitted, when the fresh pool runs out), refunded tickets,
  expired codes (signed yesterday-and-before for real passes).
"""

from __future__ import annotations

import argparse
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from parkgate.common.channels import open_channel
from parkgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    sales_pb2,
    sales_pb2_grpc,
)

PARK = "waterpark"
DAY_TICKET = "wp-day"
PASS = "load-pass"
UNLIMITED = 1_000_000_000
LEAD_ROLE = "load-window-lead"
MAX_PER_ORDER = 500
# Locust workers: each takes every MAX_WORKERS-th gate, window and prepared ticket from its index on
# (locustfile._share), so prepare at least as many gates as gate users.
MAX_WORKERS = 8


@dataclass
class LoadState:
    server: str
    park: str
    gates: dict[str, str] = field(default_factory=dict)          # device id -> secret
    windows: dict[str, str] = field(default_factory=dict)        # device id -> secret
    operators: dict[str, str] = field(default_factory=dict)      # username -> password (window leads)
    manager: tuple[str, str] = ("", "")
    fresh: list[str] = field(default_factory=list)               # one entry each
    passes: list[str] = field(default_factory=list)              # unlimited entries
    refunded: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(asdict(self)))
        tmp.replace(path)  # workers polling for the file never read half of it

    @classmethod
    def load(cls, path: Path) -> LoadState:
        data = orjson.loads(path.read_bytes())
        data["manager"] = tuple(data["manager"])
        return cls(**data)


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _password() -> str:
    return "Load-" + secrets.token_urlsafe(12)


def prepare(server: str, admin_password: str, *, gates: int = 128, windows: int = 4, fresh: int = 3000,
            passes: int = 300, refunded: int = 100, dsn: str = "") -> LoadState:
    state = LoadState(server=server, park=PARK)
    channel = open_channel(server)
    auth = auth_pb2_grpc.AuthStub(channel)
    admin_stub, catalog = admin_pb2_grpc.AdminStub(channel), catalog_pb2_grpc.CatalogStub(channel)
    md = _md(auth.Login(auth_pb2.LoginRequest(username="admin", password=admin_password), timeout=30).token)
    suffix = uuid.uuid4().hex[:6]  # a second setup on the same system makes its own devices and users

    gate_pb2_grpc.GateControlStub(channel).SetCapacity(
        gate_pb2.SetCapacityRequest(park_id=PARK, capacity=10_000_000, resume_margin=0), metadata=md, timeout=30)
    catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
        id=PASS, park_id=PARK, name="Season pass (load test)", kind=catalog_pb2.SINGLE, on_sale=True,
        rules=catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE, entries_total=0,
                                       entries_per_day=UNLIMITED, reentry_allowed=True))), metadata=md, timeout=30)
    for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
        catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id=PASS, day_type=day_type, price=common_pb2.Money(minor_units=100, currency="CNY"))),
            metadata=md, timeout=30)
    admin_stub.PutRole(admin_pb2.PutRoleRequest(role=admin_pb2.Role(
        name=LEAD_ROLE, description="load test: sells and refunds at a window",
        permissions=["sales.sell", "sales.read", "sales.refund", "catalog.read"])), metadata=md, timeout=30)

    def device(device_id: str, kind: int) -> str:
        return admin_stub.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
            id=device_id, kind=kind, park_id=PARK, site="main-entrance",
            direction=common_pb2.IN if kind == admin_pb2.GATE else 0)), metadata=md, timeout=30).secret

    for n in range(gates):
        state.gates[f"load-gate-{suffix}-{n:03d}"] = device(f"load-gate-{suffix}-{n:03d}", admin_pb2.GATE)
    for n in range(windows):
        state.windows[f"load-window-{suffix}-{n}"] = device(f"load-window-{suffix}-{n}", admin_pb2.SALES_WINDOW)
        username, password = f"load-lead-{suffix}-{n}", _password()
        admin_stub.CreateUser(admin_pb2.CreateUserRequest(username=username, password=password, roles=[LEAD_ROLE]),
                              metadata=md, timeout=30)
        state.operators[username] = password
    state.manager = (f"load-manager-{suffix}", _password())
    admin_stub.CreateUser(admin_pb2.CreateUserRequest(username=state.manager[0], password=state.manager[1],
                                                      roles=["manager"]), metadata=md, timeout=30)

    # the tickets, sold at the first window by its lead (the pre-sales of the morning)
    window, secret = next(iter(state.windows.items()))
    lead, lead_password = next(iter(state.operators.items()))
    seller_md = _md(auth.Login(auth_pb2.LoginRequest(username=lead, password=lead_password, device_id=window,
                                                     device_secret=secret), timeout=30).token)
    sales = sales_pb2_grpc.SalesStub(channel)

    def sell(product: str, count: int) -> list[sales_pb2.Ticket]:
        out: list[sales_pb2.Ticket] = []
        while len(out) < count:
            order = sales.QuickSell(sales_pb2.QuickSellRequest(
                request_id=str(uuid.uuid4()), product_id=product, quantity=min(MAX_PER_ORDER, count - len(out)),
                method=common_pb2.CASH), metadata=seller_md, timeout=120)
            out += order.tickets
        return out

    state.fresh = [t.code for t in sell(DAY_TICKET, fresh)]
    pass_tickets = sell(PASS, passes)
    state.passes = [t.code for t in pass_tickets]
    doomed = sell(DAY_TICKET, refunded)
    for order_id in {t.order_id for t in doomed}:
        sales.Refund(sales_pb2.RefundRequest(request_id=str(uuid.uuid4()), order_id=order_id,
                                             reason_id="customer-request"), metadata=seller_md, timeout=60)
    state.refunded = [t.code for t in doomed]
    if dsn:
        state.expired = _expired_codes(dsn, [t.serial for t in pass_tickets[:100]])
    channel.close()
    return state


def _expired_codes(dsn: str, serials: list[int]) -> list[str]:
    """Codes for real passes, signed with the installation's key, whose validity ended yesterday."""
    import psycopg

    from parkgate import native

    with psycopg.connect(dsn) as conn:
        key_id, seed = conn.execute("SELECT key_id, seed FROM signing_keys WHERE state = 'active'").fetchone()
        park_number, = conn.execute("SELECT number FROM parks WHERE id = %s", (PARK,)).fetchone()
        product_number, = conn.execute("SELECT number FROM products WHERE id = %s", (PASS,)).fetchone()
    key = native.SigningKey(key_id, bytes(seed))
    until = int(time.time()) - 86_400
    return [native.issue(key, serial=s, product_id=product_number, park_id=park_number, valid_from=until - 86_400,
                         valid_until=until) for s in serials]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--dsn", default="", help="the system's database, to mint expired codes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gates", type=int, default=128, help="at least the gate users of the run")
    parser.add_argument("--fresh", type=int, default=3000)
    a = parser.parse_args(argv)
    state = prepare(a.server, a.admin_password, gates=a.gates, fresh=a.fresh, dsn=a.dsn)
    state.save(a.out)
    print(f"load state: {len(state.gates)} gates, {len(state.windows)} windows, {len(state.fresh)} fresh tickets, "
          f"{len(state.passes)} passes, {len(state.refunded)} refunded, {len(state.expired)} expired -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
