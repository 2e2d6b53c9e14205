"""One sales window's conversation with the servers: sell, quick-sell, refund, look up, prices, shift.

Used by both faces of `parkgate pos` (the scriptable commands and the
interactive screen), so a sale behaves the same from either. Every mutating
call carries a request id chosen here *before* the first attempt: when a call
times out or the server goes away mid-call, the same request is sent again
with the same id, and the server returns the first outcome instead of selling
twice. That is what makes retrying after an unknown outcome safe.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from parkgate.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sales_pb2,
    sales_pb2_grpc,
)

from .. import connection
from ..connection import CallError
from ..money import parse_amount

R = TypeVar("R", bound=Message)

#: gRPC codes after which the outcome is unknown or the server never saw the call: safe to resend as is.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

PAYMENT_METHODS = {name.lower(): value for name, value in common_pb2.PaymentMethod.items() if value}


def payment_method(name: str) -> int:
    try:
        return PAYMENT_METHODS[name.lower()]
    except KeyError:
        raise ValueError(f"payment method {name!r}: one of {', '.join(PAYMENT_METHODS)}") from None


def park_today(park: catalog_pb2.Park) -> date:
    """Today in the park's calendar (what the server means by "today" there)."""
    return datetime.now(ZoneInfo(park.time_zone)).date()


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class PriceLine:
    """A product as the window shows it today."""

    product_id: str
    name: str
    park_id: str
    kind: str
    unit_price: int | None  # None: no price set for today (the product cannot be sold today)
    currency: str
    day_type: str
    card_bound: bool
    deposit: int


class Window:
    """A logged-in operator at a registered window, talking to one server (or a list of them)."""

    def __init__(self, server: str | None = None, *, call_timeout: float = 10.0, retry_for: float = 30.0) -> None:
        self.server = connection.server_address(server)
        self.channel = connection.open_channel(self.server)
        self.auth = auth_pb2_grpc.AuthStub(self.channel)
        self.catalog = catalog_pb2_grpc.CatalogStub(self.channel)
        self.sales = sales_pb2_grpc.SalesStub(self.channel)
        self.call_timeout = call_timeout
        self.retry_for = retry_for

    def close(self) -> None:
        self.channel.close()

    @property
    def metadata(self) -> Sequence[tuple[str, str]]:
        return connection.auth_metadata(connection.load_token(self.server))

    # --- calls ----------------------------------------------------------------------

    def _call(self, method: Callable[..., R], request: Message) -> R:
        try:
            return method(request, metadata=self.metadata, timeout=self.call_timeout)
        except grpc.RpcError as exc:
            raise connection.call_error(exc) from None

    def _call_idempotent(self, method: Callable[..., R], request: Message) -> R:
        """Send, and resend the very same request (same request id) while the outcome is unknown."""
        deadline = time.monotonic() + self.retry_for
        delay = 0.2
        while True:
            try:
                return method(request, metadata=self.metadata, timeout=self.call_timeout)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() + delay > deadline:  # type: ignore[attr-defined]
                    raise connection.call_error(exc) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def call_sales(self, name: str, request: R, *, mutating: bool = False) -> Any:
        """Any Sales RPC by name (the catalogue's commands): a mutating one is resent with its request id."""
        method = getattr(self.sales, name)
        return self._call_idempotent(method, request) if mutating else self._call(method, request)

    def top_up(self, card_uid: str, amount: str, method: str = "cash", *,
               request_id: str | None = None) -> sales_pb2.CardBalance:
        """Load ``amount`` (as typed, e.g. "100.00") onto a stored-value card (S8)."""
        currencies = {p.currency for p in self.parks().values()}
        currency = currencies.pop() if len(currencies) == 1 else "CNY"
        payment = sales_pb2.Payment(method=payment_method(method), amount=common_pb2.Money(
            minor_units=parse_amount(amount, currency), currency=currency))
        return self._call_idempotent(self.sales.TopUpCard, sales_pb2.TopUpCardRequest(
            request_id=request_id or new_request_id(), card_uid=card_uid, payment=payment))

    def card(self, card_uid: str) -> sales_pb2.CardHistoryResponse:
        return self._call(self.sales.CardHistory, sales_pb2.CardHistoryRequest(card_uid=card_uid))

    def zone(self) -> ZoneInfo:
        """The zone people at this window read times in: the parks' zone (UTC if parks differ)."""
        zones = {p.time_zone for p in self.parks().values()}
        return ZoneInfo(zones.pop()) if len(zones) == 1 else ZoneInfo("UTC")

    # --- session ----------------------------------------------------------------------

    def login(self, username: str, password: str, device_id: str, device_secret: str) -> auth_pb2.LoginResponse:
        reply = self._call(self.auth.Login, auth_pb2.LoginRequest(
            username=username, password=password, device_id=device_id, device_secret=device_secret))
        connection.save_token(self.server, reply.token, username)
        return reply

    def whoami(self) -> auth_pb2.WhoAmIResponse:
        return self._call(self.auth.WhoAmI, auth_pb2.WhoAmIRequest())

    def shift(self) -> sales_pb2.ShiftTotalsResponse:
        return self._call(self.sales.ShiftTotals, sales_pb2.ShiftTotalsRequest())

    # --- selling ------------------------------------------------------------------------

    def sell(self, lines: Sequence[sales_pb2.OrderLine], payments: Sequence[sales_pb2.Payment] = (), *,
             customer: str = "", request_id: str | None = None) -> sales_pb2.Order:
        request = sales_pb2.CreateOrderRequest(request_id=request_id or new_request_id(), lines=list(lines),
                                               payments=list(payments), customer=customer)
        return self._call_idempotent(self.sales.CreateOrder, request)

    def quick_sell(self, product_id: str, quantity: int = 1, method: str = "", *,
                   request_id: str | None = None) -> sales_pb2.Order:
        request = sales_pb2.QuickSellRequest(request_id=request_id or new_request_id(), product_id=product_id,
                                             quantity=quantity, method=payment_method(method) if method else 0)
        return self._call_idempotent(self.sales.QuickSell, request)

    def quote(self, product_id: str, day: date, quantity: int = 1) -> catalog_pb2.QuotePriceResponse:
        return self._call(self.catalog.QuotePrice, catalog_pb2.QuotePriceRequest(
            product_id=product_id, quantity=quantity,
            date=common_pb2.Date(year=day.year, month=day.month, day=day.day)))

    def order_total(self, lines: Sequence[sales_pb2.OrderLine]) -> tuple[int, str]:
        """What an order of these lines costs (the day's prices plus card deposits), asked of the server."""
        products = {p.id: p for p in self.products()}
        parks = self.parks()
        total, currency = 0, ""
        for line in lines:
            product = products.get(line.product_id)
            if line.HasField("visit_date"):
                visit = date(line.visit_date.year, line.visit_date.month, line.visit_date.day)
            else:
                visit = park_today(parks[product.park_id]) if product else date.today()
            quote = self.quote(line.product_id, visit, line.quantity)
            deposit = product.rules.deposit.minor_units if product and product.rules.card_bound else 0
            total += quote.total.minor_units + deposit * line.quantity
            currency = quote.total.currency
        return total, currency

    def refund(self, *, reason_id: str, order_id: str = "", ticket_ids: Sequence[str] = (), note: str = "",
               refund_deposit: bool = False, expected_amount: int = 0, currency: str = "",
               request_id: str | None = None) -> sales_pb2.RefundRecord:
        request = sales_pb2.RefundRequest(
            request_id=request_id or new_request_id(), order_id=order_id, ticket_ids=list(ticket_ids),
            reason_id=reason_id, note=note, refund_deposit=refund_deposit,
            expected_amount=common_pb2.Money(minor_units=expected_amount, currency=currency),
        )
        return self._call_idempotent(self.sales.Refund, request)

    def refunds(self, *, start: datetime | None = None, end: datetime | None = None, operator: str = "",
                reason_id: str = "") -> list[sales_pb2.RefundRecord]:
        request = sales_pb2.ListRefundsRequest(operator=operator, reason_id=reason_id)
        if start is not None:
            request.range.start.FromDatetime(start)
        if end is not None:
            request.range.end.FromDatetime(end)
        return list(self._call(self.sales.ListRefunds, request).refunds)

    def refund_reasons(self) -> list[sales_pb2.RefundReason]:
        return list(self._call(self.sales.ListRefundReasons, sales_pb2.ListRefundReasonsRequest()).reasons)

    # --- look-ups --------------------------------------------------------------------------

    def find(self, *, code: str = "", serial: int = 0, card_uid: str = "", order_id: str = "",
             ticket_id: str = "") -> list[sales_pb2.Ticket]:
        reply = self._call(self.sales.FindTickets, sales_pb2.FindTicketsRequest(
            code=code, serial=serial, card_uid=card_uid, order_id=order_id, ticket_id=ticket_id))
        return list(reply.tickets)

    def order(self, order_id: str) -> sales_pb2.Order:
        return self._call(self.sales.GetOrder, sales_pb2.GetOrderRequest(order_id=order_id))

    def products(self, park_id: str = "") -> list[catalog_pb2.Product]:
        return list(self._call(self.catalog.ListProducts, catalog_pb2.ListProductsRequest(park_id=park_id)).products)

    def parks(self) -> dict[str, catalog_pb2.Park]:
        return {p.id: p for p in self._call(self.catalog.ListParks, catalog_pb2.ListParksRequest()).parks}

    def prices(self, day: date | None = None, park_id: str = "") -> list[PriceLine]:
        """Every product on sale with its price on ``day`` (default: today in each park's own calendar).

        The price is None where the park set no price for that day.
        """
        out = []
        parks = self.parks()
        for product in self.products(park_id):
            try:
                quote = self.quote(product.id, day or park_today(parks[product.park_id]))
                unit: int | None = quote.unit_price.minor_units
                day_type = catalog_pb2.DayType.Name(quote.day_type).lower()
            except CallError as exc:
                if exc.reason != "PRICE_NOT_SET":
                    raise
                unit, day_type = None, ""
            out.append(PriceLine(
                product.id, product.name, product.park_id, catalog_pb2.ProductKind.Name(product.kind).lower(), unit,
                parks[product.park_id].currency if product.park_id in parks else "", day_type,
                product.rules.card_bound, product.rules.deposit.minor_units,
            ))
        return out


def describe(message: Message) -> dict[str, Any]:
    """A message as plain JSON-able data with the contract's field names (for --json output)."""
    return MessageToDict(message, preserving_proto_field_name=True)
