"""What the site's gates and windows talk to: the cluster's own contract, served by the edge.

One generic handler serves every method of the contract, so a gate or a
window cannot tell the edge from the cluster:

* ``Gate/Connect`` is the edge's own: hello checked against the devices of the
  feed (argon2 secret hashes), a welcome built from the feed (keys, park,
  slots, products' terms), each validation answered by :class:`.decide.Decider`,
  UPDATE_KEYS pushed when the feed changes the keyring.
* ``Auth/Login`` goes to the cluster; the session it opens is remembered, so
  the window keeps selling on the same token when the cluster goes away. With
  no cluster, the edge checks the window's device secret and the operator's
  password against the feed's argon2 hashes and opens a session of its own.
* ``Sales/QuickSell``, ``Sales/CreateOrder`` go to the cluster; when it is
  unreachable or its database is away, the edge sells alone (:mod:`.selling`).
  ``Sales/ShiftTotals`` adds the sales still waiting in the forward queue.
* every other method is passed through as bytes with its metadata (online
  only: offline it fails with OFFLINE_NOT_AVAILABLE).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate.common import device_secret, metrics
from parkgate.common.reason import Reason
from parkgate.common.tls import device_of_peer
from parkgate.v1 import auth_pb2, common_pb2, gate_pb2, sales_pb2, site_pb2

from .cluster import Cluster, reason_of, transient
from .decide import Decider
from .local import SitePicture
from .selling import OfflineSeller, SaleRefused, quick_request
from .store import Session, SiteStore

log = logging.getLogger(__name__)

_HASHER = PasswordHasher()
_PASSED_METADATA = ("authorization", "parkgate-")
GATE_CONNECT = "/parkgate.v1.Gate/Connect"


def _verify(hashed: str, secret: str) -> bool:
    try:
        return _HASHER.verify(hashed, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and str(value).startswith("Bearer "):
            return str(value)[7:]
    return ""


async def _refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: Reason, text: str) -> Any:
    await context.abort(code, text, trailing_metadata=(("parkgate-reason", reason.value),))


@dataclass(slots=True)
class _GateStream:
    """A gate connected to the edge, and the park state it was last told (as the cluster's GateHub keeps it)."""

    outbox: asyncio.Queue[gate_pb2.ServerMessage | None]
    park_id: str
    direction: str
    emergency: bool
    paused: bool


def _paused_for(state: site_pb2.SiteParkState | None, direction: str) -> bool:
    """Entry pauses at the cap: an exit gate keeps letting people out."""
    return state is not None and state.entry_paused and direction == "in"


class EdgeHandler(grpc.GenericRpcHandler):
    """Every method of the contract, for the site's gates and windows."""

    def __init__(self, store: SiteStore, cluster: Cluster, decider: Decider, seller: OfflineSeller,
                 picture: Callable[[], SitePicture], kick_forward: Callable[[], None]) -> None:
        self.store = store
        self.cluster = cluster
        self.decider = decider
        self.seller = seller
        self.picture = picture
        self.kick_forward = kick_forward
        self.gates: dict[int, _GateStream] = {}
        # S30: the connected gates whose last heartbeat said on battery, told to the cluster with the edge's power
        self.gates_on_battery: set[str] = set()
        self.gate_power_changed: Callable[[], None] = lambda: None
        self._verified: dict[tuple[str, str], str] = {}  # (device, secret) -> the hash it matched
        self._local: dict[str, Callable[..., Awaitable[bytes]]] = {
            "/parkgate.v1.Auth/Login": self._login,
            "/parkgate.v1.Auth/WhoAmI": self._whoami,
            "/parkgate.v1.Auth/Logout": self._logout,
            "/parkgate.v1.Sales/QuickSell": self._quick_sell,
            "/parkgate.v1.Sales/CreateOrder": self._create_order,
            "/parkgate.v1.Sales/ShiftTotals": self._shift_totals,
        }

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method == GATE_CONNECT:
            return grpc.stream_stream_rpc_method_handler(self._connect, gate_pb2.GateMessage.FromString,
                                                         gate_pb2.ServerMessage.SerializeToString)
        if not method.startswith("/parkgate.v1.") or method.startswith("/parkgate.v1.Site/"):
            return None
        local = self._local.get(method)
        if local is not None:
            return grpc.unary_unary_rpc_method_handler(local)
        # partial, not lambda: grpc.aio recognises coroutine (and async generator) functions through partials
        if _server_streaming(method):
            return grpc.unary_stream_rpc_method_handler(functools.partial(self._pass_stream, method))
        return grpc.unary_unary_rpc_method_handler(functools.partial(self._pass, method))

    # --- passing through -------------------------------------------------------------------------

    def _metadata(self, context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in context.invocation_metadata() or ()
                     if k.startswith(_PASSED_METADATA) and isinstance(v, str))

    async def _call(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The cluster's answer to a unary call, or the same error it gave; transient errors raise."""
        remaining = context.time_remaining()
        address = self.cluster.address
        try:
            call = self.cluster.channel().unary_unary(method)
            return await call(request, metadata=self._metadata(context),
                              timeout=min(remaining, 30.0) if remaining is not None else 30.0)
        except grpc.aio.UsageError:  # the channel was replaced under us: as good as unreachable
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "the channel to the cluster was replaced") from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await self.cluster.next_server(address)
            raise

    async def _pass(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await self._call(method, request, context)
        except grpc.aio.AioRpcError as exc:
            return await self._relay_error(exc, context)

    async def _pass_stream(self, method: str, request: bytes, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[bytes]:
        call = self.cluster.channel().unary_stream(method)
        try:
            async for item in call(request, metadata=self._metadata(context)):
                yield item
        except grpc.aio.AioRpcError as exc:
            await self._relay_error(exc, context)

    async def _relay_error(self, exc: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> Any:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            await _refuse(context, grpc.StatusCode.UNAVAILABLE, Reason.OFFLINE_NOT_AVAILABLE,
                          f"the site edge cannot reach the cluster for this call ({exc.details()})")
        await context.abort(exc.code(), exc.details() or "", trailing_metadata=exc.trailing_metadata() or ())

    # --- sessions -------------------------------------------------------------------------------------

    async def _login(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = auth_pb2.LoginRequest.FromString(raw)
        if request.device_id and not await self._certificate_ok(request.device_id, context):
            return b""  # refused: the call is aborted
        try:
            answer = await self._call("/parkgate.v1.Auth/Login", raw, context)
        except grpc.aio.AioRpcError as exc:
            if not transient(exc):
                return await self._relay_error(exc, context)
            return await self._login_alone(request, context)
        reply = auth_pb2.LoginResponse.FromString(answer)
        self.store.put_session(Session(reply.token, request.username, request.device_id, tuple(reply.permissions),
                                       request.username, time.time(), float(reply.expires_at.seconds), False))
        return answer

    async def _login_alone(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> bytes:
        body = self.store.body("operators", "user_name", request.username)
        operator = site_pb2.OperatorCredential.FromString(body) if body else None
        device = self.picture().devices.get(request.device_id)
        if device is None or device.disabled or not await self._device_ok(device, request.device_secret):
            return await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.BAD_DEVICE_CREDENTIALS,
                                 "unknown device or wrong device secret")
        if operator is None or not await asyncio.to_thread(_verify, operator.password_hash, request.password):
            return await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.BAD_CREDENTIALS,
                                 "wrong user name or password")
        if operator.disabled:
            return await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, Reason.ACCOUNT_DISABLED,
                                 "this account is disabled")
        now = time.time()
        hours = self.cluster.config.offline_session_hours
        session = Session("edge-" + secrets.token_urlsafe(32), operator.user_name, device.device_id,
                          tuple(operator.permissions), operator.display_name, now, now + hours * 3600, True)
        self.store.put_session(session)
        log.info("offline log-in of %s at %s (the cluster is away)", operator.user_name, device.device_id)
        expires = Timestamp(seconds=int(session.expires_at))
        return auth_pb2.LoginResponse(token=session.token, expires_at=expires, user_id=operator.user_name,
                                      permissions=list(operator.permissions)).SerializeToString()

    async def _session(self, context: grpc.aio.ServicerContext, permission: str = "") -> Session:
        session = self.store.session(_token(context))
        if session is None:
            return await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.UNAUTHENTICATED,
                                 "no session: log in at this window first")
        if session.expires_at and session.expires_at < time.time():
            return await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.SESSION_EXPIRED,
                                 "the session expired: log in again")
        if permission and permission not in session.permissions:
            return await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED,
                                 f"needs the permission {permission}")
        return session

    async def _logout(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        token = _token(context)
        self.store.drop_session(token)  # the edge forgets it either way
        if token.startswith("edge-"):
            return auth_pb2.LogoutResponse().SerializeToString()
        return await self._pass("/parkgate.v1.Auth/Logout", raw, context)

    async def _whoami(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if not _token(context).startswith("edge-"):
            return await self._pass("/parkgate.v1.Auth/WhoAmI", raw, context)
        s = await self._session(context)
        return auth_pb2.WhoAmIResponse(user_id=s.user_name, username=s.user_name, display_name=s.display_name,
                                       permissions=list(s.permissions), device_id=s.device_id,
                                       session_expires_at=Timestamp(seconds=int(s.expires_at))).SerializeToString()

    # --- sales ---------------------------------------------------------------------------------------------

    async def _sell(self, method: str, raw: bytes, context: grpc.aio.ServicerContext,
                    order: sales_pb2.CreateOrderRequest, quick_method: int) -> bytes:
        session = await self._session(context, "sales.sell") if _token(context).startswith("edge-") else None
        if session is None:
            try:
                return await self._call(method, raw, context)
            except grpc.aio.AioRpcError as exc:
                if not transient(exc):
                    return await self._relay_error(exc, context)
                log.info("sale %s sold alone: the cluster did not answer (%s %s)", order.request_id,
                         exc.code().name, reason_of(exc))
            session = await self._session(context, "sales.sell")
        try:
            sold = self.seller.sell(device_id=session.device_id, operator=session.user_name, session=session.token,
                                    request=order, quick_method=quick_method)
        except SaleRefused as exc:
            return await _refuse(context, grpc.StatusCode.FAILED_PRECONDITION, exc.reason, str(exc))
        self.kick_forward()
        return sold.SerializeToString()

    async def _quick_sell(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        q = sales_pb2.QuickSellRequest.FromString(raw)
        return await self._sell("/parkgate.v1.Sales/QuickSell", raw, context, quick_request(q),
                                q.method or common_pb2.CASH)

    async def _create_order(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._sell("/parkgate.v1.Sales/CreateOrder", raw, context,
                                sales_pb2.CreateOrderRequest.FromString(raw), 0)

    async def _shift_totals(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        session = await self._session(context, "sales.sell")
        totals = sales_pb2.ShiftTotalsResponse()
        online = False
        if not session.offline:
            try:
                totals = sales_pb2.ShiftTotalsResponse.FromString(
                    await self._call("/parkgate.v1.Sales/ShiftTotals", raw, context))
                online = True
            except grpc.aio.AioRpcError as exc:
                if not transient(exc):
                    return await self._relay_error(exc, context)
        if not totals.HasField("since"):
            totals.since.FromSeconds(int(session.started_at))
        # Sales the cluster does not know yet: all of them offline, those still queued online.
        for body in self.store.operator_sales(session.user_name, session.started_at, unforwarded_only=online):
            _add(totals, sales_pb2.Order.FromString(body))
        return totals.SerializeToString()

    # --- gates ---------------------------------------------------------------------------------------------

    async def _certificate_ok(self, claimed: str, context: grpc.aio.ServicerContext) -> bool:
        """With ``device_ca_file`` the handshake already required a certificate of the cluster's device CA; it
        must name the device the call claims (as at the cluster: a stolen certificate serves its own device
        only). Refuses the call (and says why in the log) when not."""
        if self.cluster.config.device_ca_file is None:
            return True
        named = device_of_peer(context.auth_context())
        if named == claimed:
            return True
        log.warning("refused a call claiming device %r: its client certificate names %r", claimed, named)
        if named is None:
            await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.DEVICE_CERT_REQUIRED,
                          f"device {claimed!r} presented no client certificate; this edge takes devices only with one")
        else:
            await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.DEVICE_CERT_MISMATCH,
                          f"the client certificate is device {named!r}'s, the call claims {claimed!r}")
        return False

    async def _device_ok(self, device: site_pb2.GateDevice, secret: str) -> bool:
        if self._verified.get((device.device_id, secret)) == device.secret_hash:
            return True
        if device_secret.is_fast(device.secret_hash):  # HMAC-SHA256 under the cluster's key (from the feed)
            ok = device_secret.verify_fast(device.secret_hash, secret, device.secret_hash_key)
        else:  # an argon2id hash from before the fast form
            ok = await asyncio.to_thread(_verify, device.secret_hash, secret)
        if ok:
            self._verified[(device.device_id, secret)] = device.secret_hash
        return ok

    async def _connect(self, requests: AsyncIterator[gate_pb2.GateMessage], context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[gate_pb2.ServerMessage]:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("body") != "hello":
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT,
                          "a gate stream starts with a hello naming the device and its secret")
            return
        hello = first.hello
        picture = self.picture()
        device = picture.devices.get(hello.device_id)
        if device is None:
            await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.UNKNOWN_DEVICE,
                          f"unknown device {hello.device_id!r}")
            return
        if device.disabled:
            await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, Reason.DEVICE_DISABLED, "device disabled")
            return
        if not await self._certificate_ok(hello.device_id, context):
            return
        if not await self._device_ok(device, hello.device_secret):
            await _refuse(context, grpc.StatusCode.UNAUTHENTICATED, Reason.BAD_DEVICE_CREDENTIALS,
                          "wrong device secret")
            return
        direction = "out" if (hello.direction or device.direction) == common_pb2.OUT else "in"
        place = picture.place(device, direction)  # type: ignore[arg-type]
        if place is None:
            await _refuse(context, grpc.StatusCode.FAILED_PRECONDITION, Reason.NO_OFFLINE_TERMS,
                          "the edge has no data of this gate's park yet (its feed has not arrived)")
            return
        welcome = self.welcome(picture, place)
        yield gate_pb2.ServerMessage(welcome=welcome)
        outbox: asyncio.Queue[gate_pb2.ServerMessage | None] = asyncio.Queue()
        self.gates[id(outbox)] = _GateStream(outbox, place.park_id, direction, welcome.emergency_open,
                                             welcome.entry_paused)
        metrics.CONNECTED_STREAMS.labels("gate").inc()
        # the state may have changed between the welcome and registering the stream
        self.sync_park_states(self.picture())
        tasks: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read(requests, place, outbox, tasks))
        try:
            while (message := await outbox.get()) is not None:
                yield message
        finally:
            self.gates.pop(id(outbox), None)
            self._gate_power(hello.device_id, False)  # a gate gone is no longer shown on battery (as the cluster)
            metrics.CONNECTED_STREAMS.labels("gate").dec()
            reader.cancel()
            for task in tasks:
                task.cancel()

    async def _read(self, requests: AsyncIterator[gate_pb2.GateMessage], place: Any,
                    outbox: asyncio.Queue[gate_pb2.ServerMessage | None], tasks: set[asyncio.Task[None]]) -> None:
        try:
            async for message in requests:
                kind = message.WhichOneof("body")
                if kind == "passage":
                    if not message.passage.passed and self.decider.give_back(place, message.passage.request_id):
                        self.kick_forward()
                    continue
                if kind == "heartbeat":
                    self._gate_power(place.device_id, message.heartbeat.on_battery)
                    continue
                if kind != "validation":
                    continue  # acks change nothing at the edge
                task = asyncio.create_task(self._answer(place, message.validation, outbox))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:  # the gate half-closed: answer what it asked, then end
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            outbox.put_nowait(None)

    def _gate_power(self, device_id: str, on_battery: bool) -> None:
        if on_battery == (device_id in self.gates_on_battery):
            return
        if on_battery:
            self.gates_on_battery.add(device_id)
        else:
            self.gates_on_battery.discard(device_id)
        log.warning("gate %s: %s", device_id, "on battery (its mains are out)" if on_battery else "back on mains")
        self.gate_power_changed()

    async def _answer(self, place: Any, request: gate_pb2.ValidationRequest,
                      outbox: asyncio.Queue[gate_pb2.ServerMessage | None]) -> None:
        try:
            result = await self.decider.validate(place, request)
        except Exception:  # never leave a person at the turnstile without an answer
            log.exception("validation %s failed at the edge", request.request_id)
            result = gate_pb2.ValidationResult(request_id=request.request_id, reason=Reason.INTERNAL.number,
                                               display_text="Please see staff")
        else:
            self.kick_forward()
        outbox.put_nowait(gate_pb2.ServerMessage(result=result))

    def welcome(self, picture: SitePicture, place: Any) -> gate_pb2.Welcome:
        park = picture.parks[place.park_id]
        state = picture.park_states.get(place.park_id)
        keys = [gate_pb2.VerifyKey(key_id=e.key_id, public_key=e.public_key, retired=e.state == 1)
                for e in picture.keyring.entries() if e.state != 2]
        revoked = [str(e.key_id) for e in picture.keyring.entries() if e.state == 2]
        return gate_pb2.Welcome(
            server_id=self.cluster.config.device_id, keys=keys, revoked_key_ids=revoked, language=park.language,
            park_number=park.park_number, attraction_slot=place.attraction_slot, time_zone=park.time_zone,
            park_id=park.park_id, attraction_id=place.attraction_id, attraction_slots=dict(park.attraction_slots),
            products=list(park.products), emergency_open=state is not None and state.emergency_open,
            entry_paused=_paused_for(state, place.direction))

    def keys_changed(self, picture: SitePicture) -> None:
        """Tell every connected gate the keyring the feed now holds (as the cluster does on a key change)."""
        keys = [gate_pb2.VerifyKey(key_id=e.key_id, public_key=e.public_key, retired=e.state == 1)
                for e in picture.keyring.entries() if e.state != 2]
        revoked = [str(e.key_id) for e in picture.keyring.entries() if e.state == 2]
        command = gate_pb2.GateCommand(command_id=secrets.token_hex(8), kind=gate_pb2.UPDATE_KEYS, keys=keys,
                                       revoked_key_ids=revoked)
        for gate in self.gates.values():
            gate.outbox.put_nowait(gate_pb2.ServerMessage(command=command))

    def sync_park_states(self, picture: SitePicture) -> None:
        """Tell each connected gate what changed in its park's state: emergency open (S25), entry paused (S27).

        The cluster's park state reaches the edge through the feed; the gates behind the edge get the same
        commands the cluster's GateHub sends its own gates. While the cluster is away the last state holds.
        """
        for gate in self.gates.values():
            state = picture.park_states.get(gate.park_id)
            if state is None:
                continue
            if state.emergency_open != gate.emergency:
                gate.emergency = state.emergency_open
                log.warning("EMERGENCY %s for park %s: telling the gate", "OPEN" if gate.emergency else "RELEASE",
                            gate.park_id)
                gate.outbox.put_nowait(gate_pb2.ServerMessage(command=gate_pb2.GateCommand(
                    command_id=secrets.token_hex(8),
                    kind=gate_pb2.EMERGENCY_OPEN_CMD if gate.emergency else gate_pb2.EMERGENCY_RELEASE_CMD,
                    reason_text="Emergency: open and stay open" if gate.emergency
                    else "Emergency over: back to normal")))
            paused = _paused_for(state, gate.direction)
            if paused != gate.paused:
                gate.paused = paused
                text = (f"Park full ({state.inside}/{state.capacity})" if paused
                        else f"Entry resumes ({state.inside}/{state.capacity})")
                gate.outbox.put_nowait(gate_pb2.ServerMessage(command=gate_pb2.GateCommand(
                    command_id=secrets.token_hex(8), kind=gate_pb2.PAUSE_ENTRY if paused else gate_pb2.RESUME_ENTRY,
                    reason_text=text)))


def _add(totals: sales_pb2.ShiftTotalsResponse, order: sales_pb2.Order) -> None:
    totals.orders += 1
    totals.tickets += len(order.tickets)
    for payment in order.payments:
        row = next((r for r in totals.by_method if r.method == payment.method), None)
        if row is None:
            row = totals.by_method.add(method=payment.method)
            row.amount.currency = payment.amount.currency
        row.count += 1
        row.amount.minor_units += payment.amount.minor_units


def _server_streaming(method: str) -> bool:
    from google.protobuf import descriptor_pool

    _, service, name = method.split("/")
    try:
        return descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name).server_streaming
    except KeyError:
        return False
