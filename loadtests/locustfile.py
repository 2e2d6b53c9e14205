"""Locust load test of parkgate: the "peak morning" of a park (S32), as gRPC users.

Written the way Locust documents gRPC users ("Testing other systems/protocols"):
grpc is made gevent-friendly (``grpc.experimental.gevent.init_gevent``), every
channel is wrapped in an interceptor that fires Locust's ``request`` event for
each call, and users hold stubs on that channel. The gate's Connect stream is
intercepted the same way: the interceptor times each validation from the
request leaving to its result arriving (matched by request id) and fires one
event per validation, named by the kind of scan.

Users (weights make the morning's mix):

* ``GateUser`` (weight 16): one entrance turnstile, one Connect stream, a
  person every 50-300 ms (``--scan-pause``). Scans, dealt like cards so every
  100 hold exactly this mix: 62 % fresh day tickets (admitted once), 10 %
  season passes (always admitted), 10 % repeated tickets (refused: already
  used), 8 % forged codes, 5 % expired codes, 5 % refunded tickets. A refusal
  the scan expects is a success in Locust's table (its own line per kind);
  anything else (a forged code admitted, an error) is a failure.
* ``WindowUser`` (weight 3): a sales window selling day tickets and family
  tickets by QuickSell (cash, bank card or phone), refunding one sale in ten;
  what it sells joins the gates' queue.
* ``ManagerUser`` (weight 1): the manager reading today's sales and entries reports.

Run (the state file is made once by the first non-worker process, or by
``python -m loadtests.load_setup``):

    headless:  locust -f loadtests/locustfile.py --host 127.0.0.1:50051 --admin-password PW \\
                      --headless -u 40 -r 10 -t 60s
    web UI:    locust -f loadtests/locustfile.py --host 127.0.0.1:50051 --admin-password PW
               (then open http://127.0.0.1:8089)
    several processes (one Locust process drives about one core of gRPC):
               locust -f loadtests/locustfile.py --master --host ... --admin-password PW
               locust -f loadtests/locustfile.py --worker   (one per core; same machine, or the state file copied)

``make load`` runs the documented scenario headless against ``parkgate up --demo`` (docs/load.md).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from gevent.event import AsyncResult
from gevent.queue import Queue
from locust import User, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from parkgate.common.channels import open_channel
from parkgate.common.reason import Reason
from parkgate.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    reports_pb2,
    reports_pb2_grpc,
    sales_pb2,
    sales_pb2_grpc,
)

try:
    from loadtests.load_setup import MAX_WORKERS, LoadState, prepare
except ModuleNotFoundError:  # `locust -f loadtests/locustfile.py` from another folder: Locust put ours on the path
    from load_setup import MAX_WORKERS, LoadState, prepare  # type: ignore[no-redef]

grpc_gevent.init_gevent()  # grpc's blocking calls now yield to other greenlets (Locust's docs, gRPC example)

log = logging.getLogger("parkgate.load")
STATE_DEFAULT = Path(__file__).with_name(".load-state.json")

#: kind of scan -> (share of scans, the reasons a correct system answers)
SCAN_MIX: dict[str, tuple[float, frozenset[str]]] = {
    "valid": (0.62, frozenset({"OK"})),
    "pass": (0.10, frozenset({"OK"})),
    "repeated": (0.10, frozenset({"ALREADY_USED", "DAILY_LIMIT_REACHED", "REENTRY_NOT_ALLOWED", "NO_ENTRIES_LEFT"})),
    "forged": (0.08, frozenset({"FORGED_CODE", "MALFORMED_CODE", "NON_CANONICAL_ENCODING", "WRONG_LENGTH",
                                "TRAILING_BYTES", "WRONG_SCHEME"})),
    "expired": (0.05, frozenset({"EXPIRED"})),
    "refunded": (0.05, frozenset({"REFUNDED"})),
}


class UnexpectedDecision(Exception):
    """The gate's answer was not what this kind of scan must get."""


# --- the interceptor: one Locust request event per call, and per validation on a stream ----------

class LocustInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, environment: Environment) -> None:
        self.env = environment
        self.pending: dict[str, tuple[str, frozenset[str], float]] = {}  # request id -> (kind, expected, sent)

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        start = time.perf_counter()
        response_length = 0
        exception: BaseException | None = None
        response = continuation(client_call_details, request)
        try:
            response_length = response.result().ByteSize()
        except grpc.RpcError as exc:
            exception = exc
        _, service, method = client_call_details.method.split("/")  # "/parkgate.v1.Sales/QuickSell"
        self.env.events.request.fire(
            request_type="grpc", name=f"{service.rsplit('.', 1)[-1]}.{method}",
            response_time=(time.perf_counter() - start) * 1000, response_length=response_length,
            response=None, context=None, exception=exception)
        return response

    def expect(self, request_id: str, kind: str, expected: frozenset[str]) -> None:
        self.pending[request_id] = (kind, expected, 0.0)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        def sent() -> Iterator[Any]:
            for message in request_iterator:
                if message.HasField("validation"):
                    rid = message.validation.request_id
                    kind, expected, _ = self.pending.get(rid, ("validation", frozenset({"OK"}), 0.0))
                    self.pending[rid] = (kind, expected, time.perf_counter())
                yield message

        responses = continuation(client_call_details, sent())

        def received() -> Iterator[Any]:
            for message in responses:
                if message.HasField("result"):
                    self._fire_result(message.result)
                yield message

        return received()

    def _fire_result(self, result: gate_pb2.ValidationResult) -> None:
        kind, expected, sent_at = self.pending.pop(result.request_id, ("validation", frozenset({"OK"}), 0.0))
        reason = Reason.from_number(result.reason).value
        exception = None if reason in expected else UnexpectedDecision(f"{kind}: {reason}")
        self.env.events.request.fire(
            request_type="gate", name=f"Gate.Connect {kind}", response_time=(time.perf_counter() - sent_at) * 1000,
            response_length=result.ByteSize(), response=None, context=None, exception=exception)


# --- shared state: the load state file and the ticket queues of this process ---------------------

@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--admin-password", env_var="PARKGATE_ADMIN_PASSWORD", default="",
                        help="the parkgate admin's password (to prepare the load state)")
    parser.add_argument("--load-state", env_var="PARKGATE_LOAD_STATE", default=str(STATE_DEFAULT),
                        help="the JSON file load_setup writes (made if missing)")
    parser.add_argument("--scan-pause", env_var="PARKGATE_SCAN_PAUSE", default="0.05,0.3",
                        help="MIN,MAX seconds between two people at one gate (default 0.05,0.3)")
    parser.add_argument("--load-dsn", env_var="PARKGATE_LOAD_DSN", default="",
                        help="the system's database, to mint expired codes (else no expired scans)")


class Pools:
    """The codes this process hands out; tickets windows sell join the fresh queue."""

    def __init__(self, state: LoadState) -> None:
        self.state = state
        self.fresh: list[str] = []  # this process's: its share of the prepared tickets, then what its windows sold
        self._prepared_shared = False
        self.used: list[str] = []
        self.gate_numbers = itertools.count()
        self.window_numbers = itertools.count()
        self.deck: list[str] = []

    def next_kind(self) -> str:
        """The next scan's kind, dealt from a shuffled deck of 100 cards in the mix's shares: every 100 scans of
        this process hold the mix exactly (a short run still sees every kind), in an unpredictable order."""
        if not self.deck:
            self.deck = [kind for kind, (share, _) in SCAN_MIX.items() for _ in range(round(share * 100))]
            random.shuffle(self.deck)
        return self.deck.pop()

    def take_fresh(self, environment: Environment) -> str | None:
        if not self._prepared_shared:
            # A worker learns its index only once the master has it, after init: the share is taken at the
            # first scan. Two processes never hold the same fresh ticket, so a "valid" scan never meets a
            # ticket another process just used.
            prepared = _share(list(self.state.fresh), environment)
            random.shuffle(prepared)
            self.fresh[:0] = prepared
            self._prepared_shared = True
        if not self.fresh:
            return None
        return self.fresh.pop()

    def admitted(self, code: str) -> None:
        """A fresh ticket that got in: from now on a scan of it is a repeat (never before its answer came)."""
        self.used.append(code)
        if len(self.used) > 5000:
            del self.used[:2500]


POOLS: Pools | None = None


@events.init.add_listener
def _load_state(environment: Environment, **_: Any) -> None:
    global POOLS
    options = environment.parsed_options
    if options is None:  # a library user building an Environment by hand sets POOLS itself
        return
    path = Path(options.load_state)
    if not path.exists() and not isinstance(environment.runner, WorkerRunner):
        host = (options.host or "127.0.0.1:50051").removeprefix("grpc://")
        if not options.admin_password:
            raise SystemExit("parkgate load: no load state file and no --admin-password to prepare one")
        log.info("preparing the load state on %s (once) ...", host)
        prepare(host, options.admin_password, dsn=options.load_dsn).save(path)
    deadline = time.monotonic() + 300
    while not path.exists():  # a worker waits for the master's setup
        if time.monotonic() > deadline:
            raise SystemExit(f"parkgate load: {path} never appeared (start the master first)")
        gevent.sleep(1)
    POOLS = Pools(LoadState.load(path))


def _pools() -> Pools:
    if POOLS is None:
        raise StopUser("no load state")
    return POOLS


def _share(items: list[Any], environment: Environment) -> list[Any]:
    """This process's share of the devices: all of them alone, every MAX_WORKERS-th from its index as a worker
    (two processes never drive one gate: a gate that connects again ends its older stream)."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return items
    return items[runner.worker_index % MAX_WORKERS::MAX_WORKERS] or items


# --- users ------------------------------------------------------------------------------------------

class GrpcUser(User):
    """A user holding stubs on an intercepted channel to ``host`` (Locust's gRPC user shape)."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.interceptor = LocustInterceptor(environment)
        target = (self.host or "127.0.0.1:50051").removeprefix("grpc://")
        self._channel = open_channel(target)
        self.channel = grpc.intercept_channel(self._channel, self.interceptor)

    def on_stop(self) -> None:
        self._channel.close()

    def login(self, username: str, password: str, device_id: str = "", secret: str = "") -> tuple[tuple[str, str]]:
        reply = auth_pb2_grpc.AuthStub(self.channel).Login(auth_pb2.LoginRequest(
            username=username, password=password, device_id=device_id, device_secret=secret), timeout=60)
        return (("authorization", f"Bearer {reply.token}"),)


class GateUser(GrpcUser):
    """One entrance turnstile: one Connect stream, one person at a time."""

    weight = 16

    def wait_time(self) -> float:
        """The next person walks up (--scan-pause MIN,MAX seconds; 0,0 drives the gates as fast as they answer)."""
        low, _, high = (self.environment.parsed_options.scan_pause if self.environment.parsed_options
                        else "0.05,0.3").partition(",")
        return random.uniform(float(low), float(high or low))

    def on_start(self) -> None:
        pools = _pools()
        devices = _share(list(pools.state.gates.items()), self.environment)
        self.device_id, self.secret = devices[next(pools.gate_numbers) % len(devices)]
        self.park = pools.state.park
        # Like the gate agent: a hello the server cannot take now (argon2 for every hello, a pool drained by a
        # connection storm) is tried again after a pause; each attempt is a line of its own in Locust's table.
        for attempt in range(10):
            started = time.perf_counter()
            try:
                self._connect()
            except (grpc.RpcError, RuntimeError, gevent.Timeout) as exc:
                self._fire_hello(started, exc)
                gevent.sleep(random.uniform(1.0, 3.0) * (attempt + 1))
                continue
            self._fire_hello(started, None)
            return
        raise StopUser()

    def _fire_hello(self, started: float, exc: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type="grpc", name="Gate.Connect hello", response_time=(time.perf_counter() - started) * 1000,
            response_length=0, response=None, context=None, exception=exc)

    def _connect(self) -> None:
        self.outbox: Queue = Queue()
        self.waiting: dict[str, AsyncResult] = {}
        self.outbox.put(gate_pb2.GateMessage(hello=gate_pb2.Hello(
            device_id=self.device_id, device_secret=self.secret, direction=common_pb2.IN, park_id=self.park)))
        self.welcome = AsyncResult()
        self.stream = gate_pb2_grpc.GateStub(self.channel).Connect(iter(self.outbox.get, None))
        self.reader = gevent.spawn(self._read)
        self.welcome.get(timeout=120)  # hellos check the device secret with argon2: slow when many connect at once

    def _read(self) -> None:
        try:
            for message in self.stream:
                if message.HasField("welcome"):
                    self.welcome.set(message.welcome)
                elif message.HasField("result"):
                    waiter = self.waiting.pop(message.result.request_id, None)
                    if waiter is not None:
                        waiter.set(message.result)
                elif message.HasField("error"):
                    self.welcome.set_exception(RuntimeError(message.error.message))
        except grpc.RpcError as exc:
            for waiter in [self.welcome, *self.waiting.values()]:
                if not waiter.ready():
                    waiter.set_exception(exc)

    def on_stop(self) -> None:
        self.outbox.put(None)  # half-close: the server answers what is in flight, then ends the stream
        self.reader.join(timeout=5)
        super().on_stop()

    def _code(self, kind: str) -> tuple[str, str]:
        """(kind actually scanned, code): a pool that ran dry falls back to a season pass."""
        pools = _pools()
        state = pools.state
        if kind == "valid":
            code = pools.take_fresh(self.environment)
            if code is not None:
                return kind, code
            kind = "pass"
        if kind == "repeated" and pools.used:
            return kind, random.choice(pools.used)
        if kind == "forged":
            code = random.choice(state.passes)
            return kind, code[:-4] + ("AAAA" if not code.endswith("AAAA") else "BBBB")
        if kind == "expired" and state.expired:
            return kind, random.choice(state.expired)
        if kind == "refunded" and state.refunded:
            return kind, random.choice(state.refunded)
        return "pass", random.choice(state.passes)

    @task
    def scan(self) -> None:
        kind, code = self._code(_pools().next_kind())
        request_id = f"{self.device_id}-{uuid.uuid4().hex[:12]}"
        waiter = AsyncResult()
        self.waiting[request_id] = waiter
        self.interceptor.expect(request_id, kind, SCAN_MIX[kind][1])
        self.outbox.put(gate_pb2.GateMessage(validation=gate_pb2.ValidationRequest(request_id=request_id,
                                                                                   code=code)))
        try:
            result = waiter.get(timeout=30)  # the interceptor fired the event when the result arrived
            if kind == "valid" and result.allow:
                _pools().admitted(code)
        except (gevent.Timeout, grpc.RpcError) as exc:
            self.waiting.pop(request_id, None)
            self.environment.events.request.fire(
                request_type="gate", name=f"Gate.Connect {kind}", response_time=30_000, response_length=0,
                response=None, context=None, exception=exc)
            raise StopUser() from exc  # the stream is gone: this turnstile is out of service


class WindowUser(GrpcUser):
    """A sales window at the peak: quick sales (S20), a refund now and then (S18)."""

    weight = 3
    wait_time = between(1.0, 3.0)  # a customer at the counter

    def on_start(self) -> None:
        pools = _pools()
        n = next(pools.window_numbers)
        window, secret = _share(list(pools.state.windows.items()), self.environment)[n % len(pools.state.windows)]
        operators = list(pools.state.operators.items())
        username, password = operators[n % len(operators)]
        self.md = self.login(username, password, window, secret)
        self.sales = sales_pb2_grpc.SalesStub(self.channel)

    @task(10)
    def quick_sell(self) -> None:
        product, quantity = random.choice((("wp-day", 1), ("wp-day", 2), ("wp-day", 3), ("wp-family4", 1)))
        method = random.choice((common_pb2.CASH, common_pb2.BANK_CARD, common_pb2.MOBILE))
        try:
            order = self.sales.QuickSell(sales_pb2.QuickSellRequest(
                request_id=str(uuid.uuid4()), product_id=product, quantity=quantity, method=method),
                metadata=self.md, timeout=30)
        except grpc.RpcError:
            return  # the interceptor counted the failure
        if random.random() < 0.1:
            self.sales.Refund(sales_pb2.RefundRequest(request_id=str(uuid.uuid4()), order_id=order.id,
                                                      reason_id="customer-request"), metadata=self.md, timeout=30)
            _pools().state.refunded.extend(t.code for t in order.tickets)
        else:
            _pools().fresh.extend(t.code for t in order.tickets)  # they walk to the gates


class ManagerUser(GrpcUser):
    """The manager refreshing today's figures."""

    weight = 1
    wait_time = between(2.0, 5.0)

    def on_start(self) -> None:
        username, password = _pools().state.manager
        self.md = self.login(username, password)
        self.reports = reports_pb2_grpc.ReportsStub(self.channel)
        self.park = _pools().state.park

    @task
    def sales_today(self) -> None:
        self.reports.SalesReport(reports_pb2.ReportRequest(
            park_id=self.park, period=reports_pb2.DAY, breakdowns=[
                reports_pb2.BY_PRODUCT, reports_pb2.BY_PAYMENT_METHOD, reports_pb2.BY_HOUR]),
            metadata=self.md, timeout=60)

    @task
    def entries_today(self) -> None:
        self.reports.EntriesReport(reports_pb2.ReportRequest(
            park_id=self.park, period=reports_pb2.DAY, breakdowns=[reports_pb2.BY_GATE, reports_pb2.BY_HOUR,
                                                                   reports_pb2.BY_REASON]),
            metadata=self.md, timeout=60)

