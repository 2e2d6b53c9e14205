"""SQL of exchange vouchers (S12, S17): issue in series, look up, change, redeem once."""

from __future__ import annotations

from datetime import date

from .database import Connection
from .fetch import fetch_all, fetch_one, params_of
from .rows.catalogue import NewVoucher, VoucherRow

_VOUCHER = """v.id::text AS id, v.code, v.series, v.request_id, coalesce(v.product_id, '') AS product_id,
    coalesce(v.value, 0) AS value, v.currency, v.valid_from, v.valid_until, v.issuer, v.recipient, v.state,
    coalesce(v.order_id::text, '') AS order_id, v.redeemed_at"""


async def insert_vouchers(conn: Connection, vouchers: list[NewVoucher]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO vouchers (code, series, request_id, product_id, value, currency, valid_from, valid_until,
                                     issuer, recipient)
               VALUES (%(code)s, %(series)s, %(request_id)s, %(product_id)s, %(value)s, %(currency)s,
                       %(valid_from)s, %(valid_until)s, %(issuer)s, %(recipient)s)""",
            [params_of(v) for v in vouchers],
        )


async def by_request(conn: Connection, request_id: str) -> list[VoucherRow]:
    return await fetch_all(conn, VoucherRow, f"SELECT {_VOUCHER} FROM vouchers v WHERE v.request_id = %s "
                           "ORDER BY v.code", (request_id,))


async def find(conn: Connection, *, code: str, recipient: str, series: str, limit: int) -> list[VoucherRow]:
    return await fetch_all(
        conn, VoucherRow,
        f"""SELECT {_VOUCHER} FROM vouchers v
            WHERE (%(code)s = '' OR v.code = %(code)s) AND (%(recipient)s = '' OR v.recipient = %(recipient)s)
              AND (%(series)s = '' OR v.series = %(series)s)
            ORDER BY v.created_at, v.code LIMIT %(limit)s""",
        {"code": code, "recipient": recipient, "series": series, "limit": limit},
    )


async def lock(conn: Connection, code: str) -> VoucherRow | None:
    """The voucher, locked: two windows redeeming it at once take turns, the second sees it redeemed."""
    return await fetch_one(conn, VoucherRow, f"SELECT {_VOUCHER} FROM vouchers v WHERE v.code = %s FOR UPDATE",
                           (code,))


async def mark_redeemed(conn: Connection, voucher_id: str, order_id: str) -> bool:
    cur = await conn.execute(
        """UPDATE vouchers SET state = 'redeemed', order_id = %s, redeemed_at = now()
           WHERE id = %s AND state = 'issued'""",
        (order_id, voucher_id),
    )
    return cur.rowcount == 1


async def change(conn: Connection, voucher_id: str, *, recipient: str | None, valid_until: date | None,
                 cancel: bool) -> None:
    await conn.execute(
        """UPDATE vouchers SET recipient = coalesce(%s, recipient), valid_until = coalesce(%s, valid_until),
                               state = CASE WHEN %s THEN 'cancelled' ELSE state END
           WHERE id = %s""",
        (recipient, valid_until, cancel, voucher_id),
    )
