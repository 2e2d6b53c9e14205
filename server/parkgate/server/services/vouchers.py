"""Exchange vouchers (S12, S17): issued in series, looked up, changed or cancelled, redeemed once at a window.

Redemption is part of the sale it pays (:func:`redeem_vouchers`, called in
the order's transaction): the voucher row is locked, so two windows redeeming
one voucher at the same moment take turns and the second hears
VOUCHER_ALREADY_REDEEMED, its whole order rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from parkgate.server.domain import catalogue as rules
from parkgate.server.domain.errors import Conflict, InvalidArgument, NotFound, Reason
from parkgate.server.domain.operators import Principal
from parkgate.server.domain.sales import PaymentIn, local_today
from parkgate.server.store import Database
from parkgate.server.store import catalog as catalog_store
from parkgate.server.store import vouchers as store
from parkgate.server.store.database import Connection
from parkgate.server.store.rows.catalogue import NewVoucher, VoucherRow

from .catalog import product_or_refuse

log = logging.getLogger(__name__)


async def redeem_vouchers(conn: Connection, order_id: str, payments: Sequence[PaymentIn],
                          lines: Sequence[tuple[str, bool, int, int]], today: date) -> None:
    """Check and redeem every voucher payment of an order (``lines``: product, accepts vouchers, price, qty)."""
    codes = [p.reference.strip().upper() for p in payments if p.method == "voucher"]
    if len(set(codes)) != len(codes):
        raise InvalidArgument("the same voucher pays twice in one order", Reason.VOUCHER_ALREADY_REDEEMED)
    checked = [rules.LineForVoucher(*line) for line in lines]
    for payment in payments:
        if payment.method != "voucher":
            continue
        code = payment.reference.strip().upper()
        row = await store.lock(conn, code)
        state = None if row is None else rules.VoucherState(row.code, row.product_id, row.value, row.valid_from,
                                                            row.valid_until, row.state)
        rules.check_redemption(state, code, payment.amount, checked, today)
        assert row is not None
        if not await store.mark_redeemed(conn, row.id, order_id):
            raise Conflict(f"voucher {code} was redeemed already", Reason.VOUCHER_ALREADY_REDEEMED)


class VoucherService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def issue(self, issuer: Principal, request_id: str, *, product_id: str, value: int, currency: str,
                    valid_from: date | None, valid_until: date | None, recipient: str, series: str,
                    count: int) -> list[VoucherRow]:
        if not 1 <= len(request_id) <= 128:
            raise InvalidArgument("request_id: 1-128 characters chosen by the client, the same on a retry")
        async with self.db.transaction() as conn:
            existing = await store.by_request(conn, request_id)
            if existing:
                return existing
            if product_id:
                product = await product_or_refuse(conn, product_id)
                park = await catalog_store.get_park(conn, product.park_id)
            else:
                parks = await catalog_store.list_parks(conn, False)
                park = next((p for p in parks if not currency or p.currency == currency), None)
                if park is None:
                    raise InvalidArgument(f"no park sells in {currency!r}")
            assert park is not None
            today = local_today(ZoneInfo(park.time_zone), datetime.now(UTC))
            first, last = valid_from or today, valid_until or date(today.year + 1, today.month, min(today.day, 28))
            rules.check_voucher_issue(product_id=product_id, value=value, valid_from=first, valid_until=last,
                                      count=count)
            name = series or f"S{request_id[:8]}"
            await store.insert_vouchers(conn, [NewVoucher(
                code=rules.voucher_code(), series=name, request_id=request_id, product_id=product_id or None,
                value=value or None, currency=park.currency, valid_from=first, valid_until=last,
                issuer=issuer.username, recipient=recipient) for _ in range(count)])
            issued = await store.by_request(conn, request_id)
        log.info("%d voucher(s) of series %s issued by %s (%s)", len(issued), name, issuer.username,
                 f"product {product_id}" if product_id else f"value {value} {park.currency}")
        return issued

    async def find(self, *, code: str, recipient: str, series: str) -> list[VoucherRow]:
        if not (code or recipient or series):
            raise InvalidArgument("look vouchers up by code, recipient or series")
        async with self.db.connection() as conn:
            return await store.find(conn, code=code.strip().upper(), recipient=recipient, series=series, limit=1000)

    async def change(self, code: str, *, recipient: str, valid_until: date | None, cancel: bool) -> VoucherRow:
        async with self.db.transaction() as conn:
            row = await store.lock(conn, code.strip().upper())
            if row is None:
                raise NotFound(f"no voucher {code!r}", Reason.UNKNOWN_VOUCHER)
            rules.check_open(row.state, row.code)
            if valid_until is not None and valid_until < row.valid_from:
                raise InvalidArgument("a voucher's validity cannot end before it starts")
            await store.change(conn, row.id, recipient=recipient or None, valid_until=valid_until, cancel=cancel)
            changed = await store.lock(conn, row.code)
        assert changed is not None
        return changed
